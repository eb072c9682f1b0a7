package main

import (
	"context"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/imokit/imo/internal/sandbox"
)

func TestBundle(t *testing.T) {
	t.Parallel()
	apps := []string{"web", "api"}
	p, err := sandbox.NewProduct(sandbox.Docker, apps, "linux/amd64")
	if err != nil {
		t.Fatal(err)
	}
	src, site := sandbox.NewRegistry(nil, nil), sandbox.NewRegistry(nil, nil)
	t.Cleanup(src.Close)
	t.Cleanup(site.Close)
	var list strings.Builder
	list.WriteString("# release 3\n\n")
	for _, app := range apps {
		for _, tag := range []string{"v1", "v3"} {
			if err := src.Write(context.Background(), src.Ref(app+":"+tag), p.Images[app+":"+tag]); err != nil {
				t.Fatal(err)
			}
		}
		list.WriteString(src.Ref(app+":v1") + "  " + src.Ref(app+":v3") + "  # " + app + "\n")
	}
	if err := site.Write(context.Background(), site.Ref("mirror/web:v1"), p.Images["web:v1"]); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	from := filepath.Join(dir, "release.txt")
	if err := os.WriteFile(from, []byte(list.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	bundle := filepath.Join(dir, "bundle.tar")

	if r := imoCmd(t, "", "pull", "--plain-http", "-q", "--from", from, "-o", bundle); r.code != 0 {
		t.Fatalf("imo pull --from:\n%s", r)
	}
	if r := imoCmd(t, "", "pull", "--plain-http", "-q", "--from", from, "a", "b"); r.code != exitUsage || !strings.Contains(r.stderr, "give no BASE FINAL arguments") {
		t.Errorf("imo pull --from FILE BASE FINAL: want exit %d:\n%s", exitUsage, r)
	}
	r := imoCmd(t, "", "inspect", bundle)
	if r.code != 0 || !strings.Contains(r.stdout, "deduplication saves") || strings.Count(r.stdout, "final ") != 2 {
		t.Errorf("imo inspect of a bundle: want both images and the deduplication saving:\n%s", r)
	}

	// The site lacks api's base: vet lists api's missing blobs and exits 3.
	target := site.Host + "/mirror"
	r = imoCmd(t, "", "vet", "--plain-http", bundle, target)
	if r.code != exitMissing || !strings.Contains(r.stdout, "ok "+site.Ref("mirror/web:v3")) || !strings.Contains(r.stdout, "lacking "+site.Ref("mirror/api:v3")) {
		t.Errorf("imo vet of a bundle missing api's base: want exit 3, web ok and api lacking:\n%s", r)
	}
	// Push pushes web, refuses api, and exits non-zero.
	r = imoCmd(t, "", "push", "--plain-http", "-q", bundle, target)
	if r.code != exitMissing || !strings.HasPrefix(r.stdout, site.Ref("mirror/web:v3@sha256:")) || strings.Contains(r.stdout, "api") {
		t.Errorf("imo push of a bundle missing api's base: want exit 3 and only web pushed:\n%s", r)
	}
	if err := site.Write(context.Background(), site.Ref("mirror/api:v1"), p.Images["api:v1"]); err != nil {
		t.Fatal(err)
	}
	r = imoCmd(t, "", "push", "--plain-http", "-q", bundle, target)
	if r.code != 0 || strings.Count(r.stdout, "\n") != 2 {
		t.Errorf("imo push of a bundle: want both images pushed:\n%s", r)
	}
}

func TestWithReferrers(t *testing.T) {
	t.Parallel()
	src, _, pair := registries(t, nil, nil)
	signer, err := sandbox.NewSigner()
	if err != nil {
		t.Fatal(err)
	}
	final, err := pair.V2.Digest()
	if err != nil {
		t.Fatal(err)
	}
	sig, err := signer.Signature(src.Ref("app"), final)
	if err != nil {
		t.Fatal(err)
	}
	if err := src.Write(context.Background(), src.Ref("app:sha256-"+final.Hex+".sig"), sig); err != nil {
		t.Fatal(err)
	}
	r := imoCmd(t, "", "pull", "--plain-http", "-q", "--dry-run", src.Ref("app:v1"), src.Ref("app:v2"))
	if r.code != 0 || strings.Contains(r.stdout, "artifact") {
		t.Errorf("imo pull --dry-run without --with-referrers: want no artifact:\n%s", r)
	}
	r = imoCmd(t, "", "pull", "--plain-http", "-q", "--dry-run", "--with-referrers", src.Ref("app:v1"), src.Ref("app:v2"))
	if r.code != 0 || !regexp.MustCompile(`artifact +`+regexp.QuoteMeta(src.Ref("app:sha256-"+final.Hex+".sig"))).MatchString(r.stdout) {
		t.Errorf("imo pull --dry-run --with-referrers: want the signature listed as an artifact:\n%s", r)
	}
}

func TestHave(t *testing.T) {
	t.Parallel()
	// The site holds app:v1; its inventory makes a whole pull of app:v2
	// carry only what v1 lacks, and vet says the inventory still holds.
	src, site, _ := registries(t, nil, nil)
	dir := t.TempDir()
	have, archive := filepath.Join(dir, "site.json"), filepath.Join(dir, "app.tar")
	if r := imoCmd(t, "", "inventory", "--plain-http", "-q", site.Host, "-o", have); r.code != 0 {
		t.Fatalf("imo inventory:\n%s", r)
	}
	whole := imoCmd(t, "", "pull", "--plain-http", "-q", "--dry-run", "scratch", src.Ref("app:v2"))
	r := imoCmd(t, "", "pull", "--plain-http", "-q", "--dry-run", "--have", have, "scratch", src.Ref("app:v2"))
	if r.code != 0 || !strings.Contains(r.stdout, "no: in the inventory of "+site.Host) || !strings.Contains(r.stdout, "inventory ") || r.stdout == whole.stdout {
		t.Errorf("imo pull --dry-run --have: want blobs left out by the inventory:\n%s", r)
	}
	if r := imoCmd(t, "", "pull", "--plain-http", "-q", "--have", have, "scratch", src.Ref("app:v2"), "-o", archive); r.code != 0 {
		t.Fatalf("imo pull --have:\n%s", r)
	}
	r = imoCmd(t, "", "vet", "--plain-http", archive, site.Ref("app:v2"))
	if r.code != 0 || !strings.Contains(r.stdout, "the archive leaves out what the inventory of "+site.Host) {
		t.Errorf("imo vet of an archive built with --have:\n%s", r)
	}
	if r := imoCmd(t, "", "pull", "--plain-http", "-q", "--have", filepath.Join(dir, "nope.json"), "scratch", src.Ref("app:v2")); r.code != exitError {
		t.Errorf("imo pull --have MISSING: want exit 1:\n%s", r)
	}
}
