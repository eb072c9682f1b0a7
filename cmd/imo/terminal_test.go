package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestTerminalRefused runs imo on a pseudo-terminal (made by script(1),
// which the test's own typescript file records): push - will not wait for
// an archive typed in, and pull -o - will not print one, each a usage error.
func TestTerminalRefused(t *testing.T) {
	if _, err := exec.LookPath("script"); err != nil {
		t.Skip("script(1) not installed (util-linux): no pseudo-terminal to run imo on")
	}
	for _, tc := range []struct {
		args, want string
	}{
		{"push - 127.0.0.1:1/x:v1", "refusing to read an archive from a terminal"},
		{"pull --plain-http scratch 127.0.0.1:1/x:v1 -o -", "terminal"},
	} {
		typescript := filepath.Join(t.TempDir(), "typescript")
		cmd := exec.Command("script", "-qec", "'"+os.Args[0]+"' "+tc.args, typescript)
		cmd.Env = append(os.Environ(), "IMO_TEST_RUN_MAIN=1")
		out, err := cmd.CombinedOutput()
		ee, ok := err.(*exec.ExitError)
		if !ok || ee.ExitCode() != exitUsage || !strings.Contains(string(out), tc.want) {
			t.Errorf("imo %s on a terminal: %v, want exit %d saying %q:\n%s", tc.args, err, exitUsage, tc.want, out)
		}
	}
}
