package tokenbroker_test

import (
	"encoding/json"
	"io"
	"os/exec"
	"slices"
	"strings"
	"testing"
)

// The import rules of docs/ARCHITECTURE.md's package map, checked on the non-test build
// (go list without -test): imports run one way.

const module = "github.com/tokenbroker/tokenbroker/"

type pkg struct {
	ImportPath string
	Imports    []string
	Deps       []string
}

// list returns the packages matching patterns, with their dependencies.
func list(t *testing.T, patterns ...string) []pkg {
	t.Helper()
	if testing.Short() {
		t.Skip("runs go list")
	}
	out, err := exec.Command("go", append([]string{"list", "-deps=false", "-json=ImportPath,Imports,Deps"}, patterns...)...).Output()
	if err != nil {
		t.Fatalf("go list %v: %v", patterns, err)
	}
	var pkgs []pkg
	dec := json.NewDecoder(strings.NewReader(string(out)))
	for {
		var p pkg
		if err := dec.Decode(&p); err == io.EOF {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		pkgs = append(pkgs, p)
	}
	if len(pkgs) == 0 {
		t.Fatalf("go list %v: no packages", patterns)
	}
	return pkgs
}

// TestBrokerImportsNothingInternal: the core and its parts are usable
// outside this module, so nothing under broker/ may link internal/.
func TestBrokerImportsNothingInternal(t *testing.T) {
	for _, p := range list(t, "./broker/...") {
		for _, d := range p.Deps {
			if strings.HasPrefix(d, module+"internal/") {
				t.Errorf("%s links %s", p.ImportPath, d)
			}
		}
	}
}

// TestClientlibLinksNoDaemonParts: a Go service that imports clientlib
// links neither a YAML parser nor the development IdP (nor anything else
// under internal/), nor the broker's config loader.
func TestClientlibLinksNoDaemonParts(t *testing.T) {
	banned := []string{"go.yaml.in/yaml", "gopkg.in/yaml", "github.com/go-oauth2/oauth2", module + "internal/", module + "broker/config", module + "cmd/"}
	for _, p := range list(t, "./clientlib/...") {
		if !slices.Contains(p.Deps, module+"broker") {
			t.Fatalf("%s: go list shows no dependency on broker; the check would prove nothing", p.ImportPath)
		}
		for _, d := range p.Deps {
			for _, b := range banned {
				if strings.HasPrefix(d, b) {
					t.Errorf("%s links %s", p.ImportPath, d)
				}
			}
		}
	}
}

// TestDaemonOnlyUnderCmd: internal/daemon is the top of the service; only
// cmd/ and test support import it, and nothing imports cmd/.
func TestDaemonOnlyUnderCmd(t *testing.T) {
	for _, p := range list(t, "./...") {
		mayUseDaemon := strings.HasPrefix(p.ImportPath, module+"cmd/") || strings.HasPrefix(p.ImportPath, module+"internal/test/")
		for _, imp := range p.Imports {
			if imp == module+"internal/daemon" && !mayUseDaemon {
				t.Errorf("%s imports internal/daemon", p.ImportPath)
			}
			if strings.HasPrefix(imp, module+"cmd/") {
				t.Errorf("%s imports %s", p.ImportPath, imp)
			}
		}
	}
}
