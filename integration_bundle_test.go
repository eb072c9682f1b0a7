package imo_test

import (
	"context"
	"net/http"
	"path/filepath"
	"strings"
	"testing"

	"github.com/imokit/imo"
	"github.com/imokit/imo/internal/sandbox"
)

// TestDistributionBundle pushes a bundle of six images over three
// repositories, two platforms each, sharing base layers, into a prefix of
// the real registry, counting what reaches it.
func TestDistributionBundle(t *testing.T) {
	src := realRegistry(t, sandbox.DistributionOptions{})
	dst := realRegistry(t, sandbox.DistributionOptions{})
	p, err := sandbox.NewProduct(sandbox.OCI, append(bundleApps, "cron"), "linux/amd64", "linux/arm64")
	if err != nil {
		t.Fatal(err)
	}
	var pairs []imo.Pair
	for _, app := range bundleApps {
		for _, tag := range []string{"v1", "v2", "v3"} {
			writeTo(t, src.Host+"/team/"+app+":"+tag, p.Images[app+":"+tag])
		}
		writeTo(t, dst.Host+"/site/team/"+app+":v1", p.Images[app+":v1"])
		for _, tag := range []string{"v2", "v3"} {
			pairs = append(pairs, imo.Pair{Base: src.Host + "/team/" + app + ":v1", Final: src.Host + "/team/" + app + ":" + tag})
		}
	}
	ctx := context.Background()
	inc := imo.New(imo.WithPlainHTTP())
	path := filepath.Join(t.TempDir(), "bundle.tar")
	if _, err := pullBundleToFile(ctx, inc, pairs, path); err != nil {
		t.Fatalf("PullBundleToFile() = %v", err)
	}

	proxy := sandbox.NewProxy(dst.Host)
	defer proxy.Close()
	target := proxy.Host + "/site"
	if _, err := vetArchive(ctx, inc, path, target); err != nil {
		t.Fatalf("VetArchive() = %v", err)
	}
	results, err := pushArchive(ctx, inc, path, target)
	if err != nil {
		t.Fatalf("PushArchive() = %v", err)
	}
	for n, r := range results {
		want, err := headDigest(pairs[n].Final)
		if err != nil {
			t.Fatal(err)
		}
		app, tag, _ := strings.Cut(strings.TrimPrefix(pairs[n].Final, src.Host+"/team/"), ":")
		at := dst.Host + "/site/team/" + app + ":" + tag
		if r.Destination.String() != proxy.Host+"/site/team/"+app+":"+tag {
			t.Errorf("image %d went to %s", n, r.Destination)
		}
		if got, err := headDigest(at); err != nil || got != want {
			t.Errorf("%s = %v, %v; want the source's %s", at, got, err, want)
		}
	}
	if n := proxy.Count(http.MethodPut, "digest="+p.Patch.String()); n != 1 {
		t.Errorf("the patch layer all six images share was uploaded %d times, want 1", n)
	}
	if n := proxy.Count(http.MethodPost, "mount="+p.Patch.String()); n != len(bundleApps)-1 {
		t.Errorf("the patch layer was mounted %d times, want %d", n, len(bundleApps)-1)
	}
	for _, h := range p.Base {
		if n := proxy.Count(http.MethodPut, h.String()) + proxy.Count(http.MethodPost, "mount="+h.String()); n != 0 {
			t.Errorf("base layer %s was sent %d times", h, n)
		}
	}

	// The far side's inventory, and a second bundle built against it:
	// a new app, whole, and a rebuild of web, carry no blob the far side
	// holds, and push mounts what they share from where it is.
	for _, tag := range []string{"v2", "v3"} {
		writeTo(t, src.Host+"/team/cron:"+tag, p.Images["cron:"+tag])
	}
	inv, err := inc.Inventory(ctx, dst.Host+"/site")
	if err != nil {
		t.Fatalf("Inventory() = %v", err)
	}
	if len(inv.Repositories) != len(bundleApps) {
		t.Errorf("the inventory lists %d repositories, want %d", len(inv.Repositories), len(bundleApps))
	}
	second := []imo.Pair{
		{Base: imo.Scratch, Final: src.Host + "/team/cron:v2"},
		{Base: imo.Scratch, Final: src.Host + "/team/cron:v3"},
		{Base: imo.Scratch, Final: src.Host + "/team/web:v3"},
	}
	path2 := filepath.Join(t.TempDir(), "second.tar")
	plan, err := pullBundleToFile(ctx, imo.New(imo.WithPlainHTTP(), imo.WithHave(inv)), second, path2)
	if err != nil {
		t.Fatalf("PullBundleToFile(--have) = %v", err)
	}
	for _, b := range plan.Blobs {
		if _, held := inv.Blob(b.Digest); held && b.Included {
			t.Errorf("the second bundle carries %s, which the far side holds", b.Digest)
		}
	}
	carried, whole := plan.Bytes()
	t.Logf("second bundle: %d of %d bytes carried", carried, whole)
	results, err = pushArchive(ctx, inc, path2, proxy.Host+"/site")
	if err != nil {
		t.Fatalf("PushArchive(second) = %v", err)
	}
	for n, r := range results {
		want, err := headDigest(second[n].Final)
		if err != nil {
			t.Fatal(err)
		}
		if got, err := headDigest(strings.Replace(r.Destination.String(), proxy.Host, dst.Host, 1)); err != nil || got != want {
			t.Errorf("%s = %v, %v; want %s", r.Destination, got, err, want)
		}
	}
	if n := proxy.Count(http.MethodPut, "digest="+p.Patch.String()); n != 1 {
		t.Errorf("after the second push the patch layer has been uploaded %d times, want once in all", n)
	}
}
