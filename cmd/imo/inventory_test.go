package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/imokit/imo/inventory"
)

func TestInventory(t *testing.T) {
	t.Parallel()
	_, site, pair := registries(t, nil, nil)
	v1Digest, err := pair.V1.Digest()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	out := filepath.Join(dir, "have.json")

	r := imoCmd(t, "", "inventory", "--plain-http", site.Host, "app", "-o", out)
	if r.code != 0 || r.stdout != "" || !strings.Contains(r.stderr, "1 repositories, 3 manifests") || !strings.Contains(r.stderr, out) {
		t.Fatalf("imo inventory -o FILE: want exit 0, nothing on stdout and a summary on stderr:\n%s", r)
	}
	if n := strings.Count(r.stderr, "\n"); n != 1 {
		t.Errorf("imo inventory printed %d lines on stderr, want the summary alone:\n%s", n, r)
	}
	inv, err := inventory.Load(out)
	if err != nil {
		t.Fatalf("imo inventory wrote an invalid inventory: %v", err)
	}
	if b, ok := inv.Blob(v1Digest); !ok || b.Kind != inventory.KindManifest || len(inv.Repositories) != 1 || inv.Repositories[0].Name != "app" {
		t.Errorf("imo inventory: the inventory lacks app:v1's index %s: %+v", v1Digest, inv)
	}
	if fi, err := os.Stat(out); err != nil || fi.Mode().Perm() != 0o644 {
		t.Errorf("imo inventory: %v, mode %v; want 0644", err, fi.Mode())
	}

	// Standard output, by default, with the catalog.
	r = imoCmd(t, "", "inventory", "--plain-http", "-q", site.Host)
	if r.code != 0 || r.stderr != "" {
		t.Fatalf("imo inventory -q: want exit 0 and nothing on stderr:\n%s", r)
	}
	fromStdout, err := inventory.Read(strings.NewReader(r.stdout))
	if err != nil || len(fromStdout.Blobs) != len(inv.Blobs) {
		t.Errorf("imo inventory to stdout: %v, want the %d blobs of the file:\n%s", err, len(inv.Blobs), r)
	}

	// A failure leaves the existing file as it was, and no other.
	before, _ := os.ReadFile(out)
	r = imoCmd(t, "", "inventory", "--plain-http", "-q", site.Host, "app", "nope/missing", "-o", out)
	if r.code != exitError || !strings.Contains(r.stderr, "nope/missing") {
		t.Errorf("imo inventory of a missing repository: want exit 1 naming it:\n%s", r)
	}
	entries, _ := os.ReadDir(dir)
	if after, _ := os.ReadFile(out); len(entries) != 1 || string(after) != string(before) {
		t.Errorf("a failed inventory left %d files or changed the existing one", len(entries))
	}
}

func TestInventoryExitCodes(t *testing.T) {
	t.Parallel()
	_, site, _ := registries(t, nil, nil)
	tests := []struct {
		name string
		args []string
		want int
		hint string
	}{
		{"no target", []string{"inventory"}, exitUsage, "TARGET"},
		{"bad flag", []string{"inventory", "--bogus", site.Host}, exitUsage, "bogus"},
		{"bad repository", []string{"inventory", "--plain-http", site.Host, "Bad/Name"}, exitError, "Bad/Name"},
		{"missing repository", []string{"inventory", "--plain-http", site.Host, "nope"}, exitError, "does not exist"},
		{"plain registry without --plain-http", []string{"inventory", site.Host, "app"}, exitError, "--plain-http"},
		{"unwritable output", []string{"inventory", "--plain-http", site.Host, "app", "-o", filepath.Join(t.TempDir(), "no", "dir", "have.json")}, exitError, "have.json"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := imoCmd(t, "", tc.args...)
			if r.code != tc.want || !strings.Contains(r.stderr, tc.hint) {
				t.Errorf("imo %v: want exit %d and %q on stderr:\n%s", tc.args, tc.want, tc.hint, r)
			}
		})
	}
}
