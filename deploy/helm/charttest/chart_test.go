// Package charttest renders the Helm chart deploy/helm/otelcol-ebpf with
// `helm template` (default and non-default values), decodes every rendered
// object strictly into its Kubernetes API type (unknown fields fail), and
// checks the pod's security properties, the collector config and the RBAC.
package charttest

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"
)

var (
	repoRoot = filepath.Join("..", "..", "..")
	chart    = filepath.Join("..", "otelcol-ebpf")
)

func helm(t *testing.T, args ...string) string {
	t.Helper()
	bin := os.Getenv("HELM")
	if bin == "" {
		bin = filepath.Join(repoRoot, ".tools", "helm")
	}
	cmd := exec.Command(bin, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("helm %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return stdout.String()
}

// rendered is one chart rendering, decoded.
type rendered struct {
	daemonSet      *appsv1.DaemonSet
	configMaps     map[string]*corev1.ConfigMap
	serviceAccount *corev1.ServiceAccount
	clusterRole    *rbacv1.ClusterRole
	binding        *rbacv1.ClusterRoleBinding
	service        *corev1.Service
	podMonitor     *monitoringv1.PodMonitor
	serviceMonitor *monitoringv1.ServiceMonitor
	rule           *monitoringv1.PrometheusRule
	kinds          []string
}

// decode splits the rendered stream and decodes each document strictly
// (sigs.k8s.io/yaml: duplicate and unknown fields are errors) into the type
// its apiVersion and kind name; a kind the test does not know fails.
func decode(t *testing.T, manifest string) rendered {
	t.Helper()
	r := rendered{configMaps: map[string]*corev1.ConfigMap{}}
	reader := utilyaml.NewYAMLReader(bufio.NewReader(strings.NewReader(manifest)))
	for {
		doc, err := reader.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		var u unstructured.Unstructured
		if err := yaml.Unmarshal(doc, &u.Object); err != nil {
			t.Fatalf("%v\n%s", err, doc)
		}
		if len(u.Object) == 0 {
			continue
		}
		gvk := u.GroupVersionKind()
		var obj any
		switch gvk.GroupVersion().String() + "/" + gvk.Kind {
		case "apps/v1/DaemonSet":
			r.daemonSet = &appsv1.DaemonSet{}
			obj = r.daemonSet
		case "v1/ConfigMap":
			cm := &corev1.ConfigMap{}
			obj = cm
			defer func() { r.configMaps[cm.Name] = cm }()
		case "v1/ServiceAccount":
			r.serviceAccount = &corev1.ServiceAccount{}
			obj = r.serviceAccount
		case "v1/Service":
			r.service = &corev1.Service{}
			obj = r.service
		case "rbac.authorization.k8s.io/v1/ClusterRole":
			r.clusterRole = &rbacv1.ClusterRole{}
			obj = r.clusterRole
		case "rbac.authorization.k8s.io/v1/ClusterRoleBinding":
			r.binding = &rbacv1.ClusterRoleBinding{}
			obj = r.binding
		case "monitoring.coreos.com/v1/PodMonitor":
			r.podMonitor = &monitoringv1.PodMonitor{}
			obj = r.podMonitor
		case "monitoring.coreos.com/v1/ServiceMonitor":
			r.serviceMonitor = &monitoringv1.ServiceMonitor{}
			obj = r.serviceMonitor
		case "monitoring.coreos.com/v1/PrometheusRule":
			r.rule = &monitoringv1.PrometheusRule{}
			obj = r.rule
		default:
			t.Fatalf("rendered an object of a kind this test does not check: %s", gvk)
		}
		if err := yaml.UnmarshalStrict(doc, obj); err != nil {
			t.Fatalf("%s does not decode strictly into %T: %v", gvk.Kind, obj, err)
		}
		r.kinds = append(r.kinds, gvk.Kind)
	}
	return r
}

func render(t *testing.T, valueFiles ...string) rendered {
	t.Helper()
	args := []string{"template", "ebpf", chart, "--namespace", "ebpf-telemetry"}
	for _, f := range valueFiles {
		args = append(args, "--values", f)
	}
	return decode(t, helm(t, args...))
}

func TestLint(t *testing.T) {
	helm(t, "lint", "--strict", chart)
	helm(t, "lint", "--strict", chart, "--values", "testdata/custom-values.yaml")
}

func TestDefaultValues(t *testing.T) {
	r := render(t)
	checkPod(t, r, nil)
	if got := r.daemonSet.Spec.Template.Spec.Containers[0].Args; !slices.Equal(got, []string{"--config", "/etc/otelcol-ebpf/config.yaml"}) {
		t.Errorf("collector args %v: no feature gate without a profiles pipeline", got)
	}
	checkConfig(t, r, []string{"prometheus"})
	checkRBAC(t, r)
	if r.podMonitor != nil || r.serviceMonitor != nil || r.service != nil || r.rule != nil {
		t.Errorf("monitors and the PrometheusRule are off by default, rendered %v", r.kinds)
	}
	dash := r.configMaps["ebpf-otelcol-ebpf-dashboards"]
	if dash == nil || dash.Labels["grafana_dashboard"] != "1" {
		t.Fatalf("no dashboards ConfigMap with label grafana_dashboard=1: %v", r.kinds)
	}
	for _, name := range []string{"ebpf-node.json", "ebpf-pod.json"} {
		want, err := os.ReadFile(filepath.Join(repoRoot, "deploy", "grafana", name))
		if err != nil {
			t.Fatal(err)
		}
		if strings.TrimSpace(dash.Data[name]) != strings.TrimSpace(string(want)) {
			t.Errorf("dashboards ConfigMap: %s differs from deploy/grafana/%s", name, name)
		}
	}
	rules := r.configMaps["ebpf-otelcol-ebpf-rules"]
	if rules == nil || rules.Labels["prometheus_rule"] != "1" || !strings.Contains(rules.Data["ebpf-rules.yaml"], "EbpfOomKill") {
		t.Errorf("no rules ConfigMap with label prometheus_rule=1 and the rules")
	}
}

func TestNonDefaultValues(t *testing.T) {
	r := render(t, "testdata/custom-values.yaml")
	checkPod(t, r, []corev1.Capability{"SYS_PTRACE"})
	checkConfig(t, r, []string{"prometheus", "otlp"})
	checkRBAC(t, r)
	pod := r.daemonSet.Spec.Template.Spec
	if !pod.HostNetwork || pod.DNSPolicy != corev1.DNSClusterFirstWithHostNet {
		t.Errorf("hostNetwork: %v, dnsPolicy %q", pod.HostNetwork, pod.DNSPolicy)
	}
	if pod.PriorityClassName != "system-node-critical" || len(pod.ImagePullSecrets) != 1 {
		t.Errorf("priorityClassName %q, imagePullSecrets %v", pod.PriorityClassName, pod.ImagePullSecrets)
	}
	collectorArgs := []string{"--config", "/etc/otelcol-ebpf/config.yaml",
		"--feature-gates=service.profilesSupport", "--set=service.telemetry.logs.level=debug"}
	if got := pod.Containers[0].Args; !slices.Equal(got, collectorArgs) {
		t.Errorf("collector args %v, want %v (a profiles pipeline needs the profiles gate)", got, collectorArgs)
	}
	sidecar := pod.InitContainers[0]
	if sidecar.Image != "registry.example/ebpf-sidecar:1.2.3" || !slices.Contains(sidecar.Args, "CAP_SYS_PTRACE") {
		t.Errorf("sidecar image %q args %v", sidecar.Image, sidecar.Args)
	}
	if got := sidecar.Resources.Limits.Memory().String(); got != "600Mi" {
		t.Errorf("sidecar memory limit %s", got)
	}
	if r.podMonitor == nil || len(r.podMonitor.Spec.PodMetricsEndpoints) != 2 || r.podMonitor.Labels["release"] != "kube-prometheus-stack" {
		t.Errorf("PodMonitor: %+v", r.podMonitor)
	}
	if r.serviceMonitor == nil || r.service == nil || r.service.Spec.ClusterIP != corev1.ClusterIPNone {
		t.Errorf("ServiceMonitor %v and its headless Service %v", r.serviceMonitor != nil, r.service)
	}
	if r.rule == nil || len(r.rule.Spec.Groups) == 0 || len(r.rule.Spec.Groups[0].Rules) < 8 {
		t.Fatalf("PrometheusRule with the rules: %+v", r.rule)
	}
	if _, ok := r.configMaps["ebpf-otelcol-ebpf-rules"]; ok {
		t.Errorf("rules ConfigMap rendered although rules.configMap.enabled is false")
	}
	if dash := r.configMaps["ebpf-otelcol-ebpf-dashboards"]; dash == nil || dash.Labels["grafana_dashboard"] != "yes" || dash.Annotations["grafana_folder"] != "kernel" {
		t.Errorf("dashboards ConfigMap labels/annotations: %+v", dash)
	}
}

// checkPod checks the security properties: a sidecar with capabilities only
// (BPF, PERFMON and the measured start needs, plus extra), never privileged;
// a collector that is non-root, read-only, with every capability dropped; no
// host directory mounted over the image's own /usr/src or /lib/modules.
func checkPod(t *testing.T, r rendered, extra []corev1.Capability) {
	t.Helper()
	if r.daemonSet == nil {
		t.Fatal("no DaemonSet rendered")
	}
	pod := r.daemonSet.Spec.Template.Spec
	if !pod.HostPID {
		t.Error("hostPID is off: the sidecar needs the node's pids")
	}
	if len(pod.InitContainers) != 1 || len(pod.Containers) != 1 {
		t.Fatalf("want the sidecar (native sidecar) and the collector, got %d init, %d containers", len(pod.InitContainers), len(pod.Containers))
	}
	sidecar, collector := pod.InitContainers[0], pod.Containers[0]
	if sidecar.RestartPolicy == nil || *sidecar.RestartPolicy != corev1.ContainerRestartPolicyAlways {
		t.Error("the sidecar is not a native sidecar (restartPolicy: Always)")
	}
	for _, c := range append(pod.InitContainers, pod.Containers...) {
		sc := c.SecurityContext
		if sc == nil || sc.Privileged == nil || *sc.Privileged {
			t.Errorf("%s: privileged must be set, to false", c.Name)
		}
		if sc == nil || sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
			t.Errorf("%s: allowPrivilegeEscalation must be false", c.Name)
		}
		if sc == nil || sc.Capabilities == nil || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) {
			t.Errorf("%s: capabilities must drop ALL", c.Name)
		}
	}
	want := append([]corev1.Capability{"BPF", "PERFMON", "SETPCAP", "CHOWN", "FSETID"}, extra...)
	if got := sidecar.SecurityContext.Capabilities.Add; !slices.Equal(got, want) {
		t.Errorf("sidecar capabilities: got %v, want %v", got, want)
	}
	for _, c := range sidecar.SecurityContext.Capabilities.Add {
		if c == "SYS_ADMIN" && !slices.Contains(extra, "SYS_ADMIN") {
			t.Error("the sidecar must not get SYS_ADMIN by default")
		}
	}
	sc := collector.SecurityContext
	if sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot || sc.RunAsUser == nil || *sc.RunAsUser == 0 {
		t.Errorf("collector must run as non-root: %+v", sc)
	}
	if sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
		t.Error("collector's root filesystem must be read-only")
	}
	if len(sc.Capabilities.Add) != 0 {
		t.Errorf("collector adds capabilities %v", sc.Capabilities.Add)
	}
	hostPaths := map[string]bool{}
	for _, v := range pod.Volumes {
		if v.HostPath != nil {
			hostPaths[v.Name] = true
		}
	}
	for _, c := range append(pod.InitContainers, pod.Containers...) {
		for _, m := range c.VolumeMounts {
			if hostPaths[m.Name] && (m.MountPath == "/usr/src" || m.MountPath == "/lib/modules") {
				t.Errorf("%s: host volume %s mounted over the image's %s", c.Name, m.Name, m.MountPath)
			}
			if c.Name == "collector" && hostPaths[m.Name] && !m.ReadOnly {
				t.Errorf("collector: host volume %s mounted writable", m.Name)
			}
		}
	}
	if !slices.ContainsFunc(sidecar.Env, func(e corev1.EnvVar) bool { return e.Name == "HOST_ROOT" && e.Value == "/host" }) {
		t.Error("sidecar: HOST_ROOT=/host (the node's headers for the entrypoint) is missing")
	}
	for _, c := range []corev1.Container{sidecar, collector} {
		if c.Resources.Requests.Memory().IsZero() || c.Resources.Limits.Memory().IsZero() || c.Resources.Requests.Cpu().IsZero() {
			t.Errorf("%s: memory request and limit and a CPU request are required: %+v", c.Name, c.Resources)
		}
	}
}

// checkConfig checks the collector's config: the receiver on the pod's
// socket, hostmetrics on the node's /proc and /sys, k8sattributes between
// them and the exporters.
func checkConfig(t *testing.T, r rendered, exporters []string) {
	t.Helper()
	cm := r.configMaps["ebpf-otelcol-ebpf"]
	if cm == nil {
		t.Fatal("no collector ConfigMap")
	}
	var cfg struct {
		Receivers  map[string]map[string]any `json:"receivers"`
		Processors map[string]map[string]any `json:"processors"`
		Exporters  map[string]any            `json:"exporters"`
		Service    struct {
			Pipelines map[string]struct {
				Receivers  []string `json:"receivers"`
				Processors []string `json:"processors"`
				Exporters  []string `json:"exporters"`
			} `json:"pipelines"`
			Telemetry map[string]any `json:"telemetry"`
		} `json:"service"`
	}
	if err := yaml.UnmarshalStrict([]byte(cm.Data["config.yaml"]), &cfg); err != nil {
		t.Fatalf("config.yaml: %v", err)
	}
	if got := cfg.Receivers["ebpf"]["endpoint"]; got != "unix:///run/ebpf-sidecar/sidecar.sock" {
		t.Errorf("ebpf receiver endpoint %v", got)
	}
	if got := cfg.Receivers["host_metrics"]["root_path"]; got != "/hostfs" {
		t.Errorf("host_metrics root_path %v", got)
	}
	if _, ok := cfg.Processors["k8s_attributes"]["extract"]; !ok {
		t.Error("k8s_attributes extracts nothing")
	}
	m := cfg.Service.Pipelines["metrics"]
	if !slices.Equal(m.Receivers, []string{"ebpf", "host_metrics"}) || !slices.Contains(m.Processors, "k8s_attributes") || !slices.Equal(m.Exporters, exporters) {
		t.Errorf("metrics pipeline %+v", m)
	}
	if r.daemonSet.Spec.Template.Annotations["checksum/config"] == "" {
		t.Error("no checksum/config annotation: a config change would not roll the pods")
	}
}

// checkRBAC: k8sattributesprocessor reads, and nothing else.
func checkRBAC(t *testing.T, r rendered) {
	t.Helper()
	if r.clusterRole == nil || r.binding == nil || r.serviceAccount == nil {
		t.Fatalf("RBAC incomplete: %v", r.kinds)
	}
	for _, rule := range r.clusterRole.Rules {
		for _, verb := range rule.Verbs {
			if !slices.Contains([]string{"get", "list", "watch"}, verb) {
				t.Errorf("ClusterRole grants %q on %v", verb, rule.Resources)
			}
		}
	}
	var pods bool
	for _, rule := range r.clusterRole.Rules {
		pods = pods || slices.Contains(rule.Resources, "pods")
	}
	if !pods {
		t.Error("ClusterRole cannot read pods")
	}
	if r.binding.Subjects[0].Name != r.serviceAccount.Name || r.daemonSet.Spec.Template.Spec.ServiceAccountName != r.serviceAccount.Name {
		t.Error("the binding, the ServiceAccount and the pod do not agree")
	}
}

// TestRunbooksPointAtPanels: every alert's dashboard annotation names a
// panel that exists in the dashboard it points at.
func TestRunbooksPointAtPanels(t *testing.T) {
	var rules monitoringv1.PrometheusRuleSpec
	b, err := os.ReadFile(filepath.Join(repoRoot, "deploy", "prometheus", "ebpf-rules.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.UnmarshalStrict(b, &rules); err != nil {
		t.Fatal(err)
	}
	panels := map[string]bool{}
	for _, uid := range []string{"ebpf-node", "ebpf-pod"} {
		b, err := os.ReadFile(filepath.Join(repoRoot, "deploy", "grafana", uid+".json"))
		if err != nil {
			t.Fatal(err)
		}
		var d struct {
			Panels []struct {
				ID   int    `json:"id"`
				Type string `json:"type"`
			} `json:"panels"`
		}
		if err := yaml.Unmarshal(b, &d); err != nil {
			t.Fatal(err)
		}
		for _, p := range d.Panels {
			if p.Type != "row" {
				panels[fmt.Sprintf("/d/%s/?viewPanel=%d", uid, p.ID)] = true
			}
		}
	}
	n := 0
	for _, g := range rules.Groups {
		for _, rule := range g.Rules {
			n++
			if rule.Annotations["runbook"] == "" || !panels[rule.Annotations["dashboard"]] {
				t.Errorf("%s: runbook %q, dashboard %q is no panel", rule.Alert, rule.Annotations["runbook"], rule.Annotations["dashboard"])
			}
		}
	}
	if n < 8 {
		t.Errorf("only %d rules", n)
	}
}
