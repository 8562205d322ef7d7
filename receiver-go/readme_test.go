package ebpfreceiver

import (
	"os"
	"reflect"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// configKeys lists the mapstructure keys of t as dotted paths; slices of
// structs get "[]" (metrics[].attributes[].field). configoptional.Optional
// fields are followed into their value type.
func configKeys(t reflect.Type, prefix string) []string {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t.Kind() != reflect.Struct {
		return nil
	}
	var keys []string
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		tag, ok := f.Tag.Lookup("mapstructure")
		if !ok || tag == "-" {
			continue
		}
		name, opts, _ := strings.Cut(tag, ",")
		if name == "" && strings.Contains(opts, "squash") {
			keys = append(keys, configKeys(f.Type, prefix)...)
			continue
		}
		path := prefix + name
		keys = append(keys, path)
		keys = append(keys, configKeys(fieldValueType(f.Type), path+childSep(f.Type))...)
	}
	return keys
}

// fieldValueType unwraps slices, pointers and configoptional.Optional[T].
func fieldValueType(t reflect.Type) reflect.Type {
	for {
		switch {
		case t.Kind() == reflect.Pointer || t.Kind() == reflect.Slice:
			t = t.Elem()
		case t.Kind() == reflect.Struct && strings.HasPrefix(t.Name(), "Optional["):
			m, ok := reflect.PointerTo(t).MethodByName("Get")
			if !ok {
				return t
			}
			t = m.Type.Out(0)
		default:
			return t
		}
	}
}

func childSep(t reflect.Type) string {
	if t.Kind() == reflect.Slice {
		return "[]."
	}
	return "."
}

// TestReadmeDocumentsEveryKey checks that README.md's configuration reference
// names every key of Config, as `dotted.path` in backticks.
func TestReadmeDocumentsEveryKey(t *testing.T) {
	b, err := os.ReadFile("README.md")
	require.NoError(t, err)
	readme := string(b)
	start := strings.Index(readme, "## Configuration reference")
	require.GreaterOrEqual(t, start, 0, "README.md needs a '## Configuration reference' section")
	section := readme[start+1:]
	if next := regexp.MustCompile(`(?m)^## `).FindStringIndex(section); next != nil {
		section = section[:next[0]]
	}
	keys := configKeys(reflect.TypeOf(Config{}), "")
	require.Contains(t, keys, "metrics[].attributes[].resource")
	require.Contains(t, keys, "programs[].parameters")
	for _, k := range keys {
		assert.Contains(t, section, "`"+k+"`", "README.md's configuration reference does not document %s", k)
	}
}
