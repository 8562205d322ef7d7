{{- define "otelcol-ebpf.name" -}}
{{- .Chart.Name -}}
{{- end -}}

{{- define "otelcol-ebpf.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "otelcol-ebpf.selectorLabels" -}}
app.kubernetes.io/name: {{ include "otelcol-ebpf.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "otelcol-ebpf.labels" -}}
{{ include "otelcol-ebpf.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "otelcol-ebpf.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "otelcol-ebpf.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* The sidecar's socket, in an emptyDir both containers mount. */}}
{{- define "otelcol-ebpf.socket" -}}
unix:///run/ebpf-sidecar/sidecar.sock
{{- end -}}

{{/* The collector config: .Values.config with the receiver's endpoint set. */}}
{{- define "otelcol-ebpf.config" -}}
{{- $config := deepCopy .Values.config -}}
{{- $ebpf := dict "endpoint" (include "otelcol-ebpf.socket" .) -}}
{{- range $name, $receiver := $config.receivers -}}
{{- if or (eq $name "ebpf") (hasPrefix "ebpf/" $name) -}}
{{- $_ := set $config.receivers $name (merge $ebpf (default dict $receiver)) -}}
{{- end -}}
{{- end -}}
{{- toYaml $config -}}
{{- end -}}
