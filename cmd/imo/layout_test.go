package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestLayouts runs the layout workflows as a user would: a registry image
// into a site's layout, the difference into it after vet, and the layout
// as the source of a pull back into a registry.
func TestLayouts(t *testing.T) {
	src, site, pair := registries(t, nil, nil)
	dir := t.TempDir()
	layout := "oci:" + filepath.Join(dir, "site")
	whole, diff := filepath.Join(dir, "v1.tar"), filepath.Join(dir, "diff.tar")
	v1, _ := pair.V1.Digest()
	v2, _ := pair.V2.Digest()
	pairs := filepath.Join(dir, "pairs.txt")
	if err := os.WriteFile(pairs, []byte("# from the site's layout\nscratch "+layout+":v1\n"+layout+":v1 "+layout+":v2\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	steps := []struct {
		args []string
		code int
		out  string
	}{
		{[]string{"pull", "--plain-http", "-q", "scratch", src.Ref("app:v1"), "-o", whole}, 0, ""},
		{[]string{"pull", "--plain-http", "-q", src.Ref("app:v1"), src.Ref("app:v2"), "-o", diff}, 0, ""},
		{[]string{"vet", "-q", diff, layout}, exitMissing, "lacking " + layout + ":v2"},
		{[]string{"push", "-q", "oci-archive:" + whole, layout + ":v1"}, 0, layout + ":v1@" + v1.String()},
		{[]string{"vet", "-q", diff, layout}, 0, "ok " + layout + ":v2"},
		{[]string{"push", "-q", diff, layout}, 0, layout + ":v2@" + v2.String()},
		{[]string{"pull", "-q", "scratch", layout + ":v2", "-o", filepath.Join(dir, "back.tar")}, 0, ""},
		{[]string{"push", "--plain-http", "-q", filepath.Join(dir, "back.tar"), site.Ref("back:v2")}, 0, "@" + v2.String()},
		{[]string{"pull", "-q", "scratch", layout + ":v9"}, exitError, ""},
		{[]string{"manifest", "--head", layout + ":v2"}, 0, v2.String()},
		// A bundle of pairs from the layout, through a --from file, into another layout.
		{[]string{"pull", "-q", "--from", pairs, "-o", filepath.Join(dir, "bundle.tar")}, 0, ""},
		{[]string{"push", "-q", filepath.Join(dir, "bundle.tar"), "oci:" + filepath.Join(dir, "copy")}, 0, ":" + layout + ":v2@" + v2.String()},
		// What the layout holds, as an inventory: a pull against it carries
		// only the new config.
		{[]string{"inventory", "-q", layout, "-o", filepath.Join(dir, "site.json")}, 0, ""},
		{[]string{"pull", "--plain-http", "-q", "--have", filepath.Join(dir, "site.json"), "scratch", src.Ref("app:v2"), "-o", filepath.Join(dir, "inv.tar")}, 0, ""},
		{[]string{"inspect", filepath.Join(dir, "inv.tar")}, 0, "in the inventory of " + layout},
		// A one-way link: the earlier archive stands for what the far side holds.
		{[]string{"pull", "--plain-http", "-q", "--have", whole, "scratch", src.Ref("app:v2"), "-o", filepath.Join(dir, "sent.tar")}, 0, ""},
		{[]string{"inspect", filepath.Join(dir, "sent.tar")}, 0, "sent before, in v1.tar"},
		{[]string{"push", "-q", filepath.Join(dir, "sent.tar"), layout + ":again"}, 0, layout + ":again@" + v2.String()},
	}
	for _, s := range steps {
		r := imoCmd(t, "", s.args...)
		if r.code != s.code || !strings.Contains(r.stdout, s.out) {
			t.Fatalf("imo %s: want exit %d and %q on stdout:\n%s", strings.Join(s.args, " "), s.code, s.out, r)
		}
	}
}
