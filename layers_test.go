package imo_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// TestLayers checks the layers the compiler cannot: the archive and
// inventory formats import no networking, and the operations at the root
// build no HTTP request (internal/registry makes every one).
func TestLayers(t *testing.T) {
	goTool := filepath.Join(runtime.GOROOT(), "bin", "go")
	out, err := exec.Command(goTool, "list", "-deps", "./archive", "./inventory", "./volume").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	for _, pkg := range strings.Fields(string(out)) {
		if pkg == "net/http" || pkg == "github.com/imokit/imo" || strings.HasPrefix(pkg, "github.com/imokit/imo/internal/registry") {
			t.Errorf("a format package (archive, inventory, volume) depends on %s", pkg)
		}
	}
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, call := range []string{"http.NewRequest", "http.Client{", ".RoundTrip("} {
			if strings.Contains(string(b), call) {
				t.Errorf("%s makes HTTP requests itself (%s): that belongs in internal/registry", f, call)
			}
		}
	}
}
