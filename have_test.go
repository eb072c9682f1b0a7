package imo_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/imokit/imo"
	"github.com/imokit/imo/archive"
	"github.com/imokit/imo/internal/sandbox"
	"github.com/imokit/imo/inventory"
)

// TestHave ships web:v2 whole, takes the far side's inventory, and then
// ships api:v3 and worker:v3 against it: the second bundle carries nothing
// the far side holds, and its push mounts the shared layers from where the
// inventory saw them.
func TestHave(t *testing.T) {
	t.Parallel()
	src, p, _ := bundleSetup(t, docker)
	site := newTestRegistry(t, nil)
	ctx := context.Background()
	inc := imo.New(imo.WithPlainHTTP())
	first := pullBundleFile(t, inc, []imo.Pair{{Base: imo.Scratch, Final: src.ref("team/web:v2")}})
	if _, err := pushArchive(ctx, inc, first, site.Host+"/site/"); err != nil {
		t.Fatalf("PushArchive(first) = %v", err)
	}
	inv, err := inc.Inventory(ctx, site.Host+"/site")
	if err != nil {
		t.Fatalf("Inventory() = %v", err)
	}

	withHave := imo.New(imo.WithPlainHTTP(), imo.WithHave(inv))
	pairs := []imo.Pair{{Base: imo.Scratch, Final: src.ref("team/api:v3")}, {Base: imo.Scratch, Final: src.ref("team/worker:v3")}}
	second := pullBundleFile(t, withHave, pairs)
	plan, err := archive.Inspect(ctx, second)
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(second)
	if err != nil {
		t.Fatal(err)
	}
	names := tarNames(t, b)
	for _, ib := range inv.Blobs {
		if hasBlob(names, ib.Digest) && ib.Kind != inventory.KindManifest {
			t.Errorf("the second bundle carries %s, which the inventory lists", ib.Digest)
		}
	}
	for _, h := range append(p.Base, p.Patch) {
		if hasBlob(names, h) {
			t.Errorf("the second bundle carries shared layer %s", h)
		}
	}
	var heldBy []string
	for _, pb := range plan.Blobs {
		if pb.Digest == p.Patch {
			heldBy = pb.HeldBy
			if !strings.HasPrefix(string(pb.Reason), "in the inventory of "+site.Host+"/site taken ") {
				t.Errorf("the patch layer is left out because %q", pb.Reason)
			}
		}
	}
	if len(heldBy) != 1 || heldBy[0] != "site/team/web" {
		t.Errorf("the plan says the patch layer is held by %v, want [site/team/web]", heldBy)
	}
	full, err := planBundle(ctx, inc, pairs)
	if err != nil {
		t.Fatal(err)
	}
	withInv, _ := plan.Bytes()
	without, _ := full.Bytes()
	if withInv >= without {
		t.Errorf("the bundle carries %d bytes with the inventory, %d without", withInv, without)
	}
	if len(plan.Inventories) != 1 || !plan.Inventories[0].Taken.Equal(inv.Taken) || plan.Inventories[0].Blobs != len(inv.Blobs) {
		t.Errorf("the plan records the inventories %+v, want the one taken at %s", plan.Inventories, inv.Taken)
	}

	// The far side still holds everything: vet passes, and push mounts the
	// shared layers from site/team/web into the new repositories.
	site.resetCounts()
	if _, err := vetArchive(ctx, inc, second, site.Host+"/site"); err != nil {
		t.Fatalf("VetArchive(second) = %v", err)
	}
	results, err := pushArchive(ctx, inc, second, site.Host+"/site")
	if err != nil {
		t.Fatalf("PushArchive(second) = %v", err)
	}
	for n, r := range results {
		if want := digest(t, p.Images[strings.TrimPrefix(pairs[n].Final, src.ref("team/"))]); r.Digest != want {
			t.Errorf("%s = %s, want %s", r.Destination, r.Digest, want)
		}
		if _, err := headDigest(r.Destination.String()); err != nil {
			t.Errorf("%s: %v", r.Destination, err)
		}
	}
	if n := site.count(http.MethodPost, "mount="+p.Patch.String()+"&from=site/team/web"); n != 2 {
		t.Errorf("the patch layer was mounted from site/team/web %d times, want 2", n)
	}
	if n := site.count(http.MethodPut, "digest="+p.Patch.String()); n != 0 {
		t.Errorf("the patch layer was uploaded %d times", n)
	}

	// A registry that does not hold what the inventory listed: vet names
	// every blob that disappeared.
	other := newTestRegistry(t, nil)
	_, err = vetArchive(ctx, inc, second, other.Host+"/site")
	var missing *imo.MissingBlobsError
	if !errors.As(err, &missing) {
		t.Fatalf("VetArchive(elsewhere) = %v, want missing blobs", err)
	}
	found := map[v1.Hash]bool{}
	for _, m := range missing.Blobs {
		found[m.Digest] = true
	}
	if !found[p.Patch] {
		t.Errorf("vet elsewhere did not name the patch layer: %v", err)
	}
}

func TestHaveNil(t *testing.T) {
	_, err := planOf(context.Background(), imo.New(imo.WithHave(nil)), imo.Scratch, "example.com/a:b")
	if !errors.Is(err, imo.ErrInvalidOption) {
		t.Errorf("WithHave(nil) = %v, want ErrInvalidOption", err)
	}
}

func TestHaveWithBase(t *testing.T) {
	t.Parallel()
	// A layer both in the base and in the inventory keeps where the
	// inventory saw it, so a push into a repository that lacks the base
	// mounts it from there.
	src, _, _ := bundleSetup(t, docker)
	site := newTestRegistry(t, nil)
	ctx := context.Background()
	inc := imo.New(imo.WithPlainHTTP())
	first := pullBundleFile(t, inc, []imo.Pair{{Base: imo.Scratch, Final: src.ref("team/web:v1")}})
	if _, err := pushArchive(ctx, inc, first, site.Host+"/site/"); err != nil {
		t.Fatal(err)
	}
	inv, err := inc.Inventory(ctx, site.Host+"/site")
	if err != nil {
		t.Fatal(err)
	}
	withHave := imo.New(imo.WithPlainHTTP(), imo.WithHave(inv))
	for _, base := range []string{imo.Scratch, src.ref("team/api:v1")} {
		path := pullBundleFile(t, withHave, []imo.Pair{{Base: base, Final: src.ref("team/api:v2")}})
		if _, err := pushArchive(ctx, withHave, path, site.Host+"/site"); err != nil {
			t.Errorf("base %s: PushArchive() = %v", base, err)
		}
	}
}

func TestHeldBySources(t *testing.T) {
	t.Parallel()
	// The repositories an archive says held a blob are mount sources only
	// under the target's prefix, and one the pusher may not read is
	// skipped for the next.
	src := newTestRegistry(t, nil)
	pair := newAppPair(t, sandbox.OCI, "linux/amd64")
	src.write(t, src.ref("team/app:v1"), pair.V1)
	src.write(t, src.ref("team/app:v2"), pair.V2)
	inc := imo.New(imo.WithPlainHTTP())
	arc := pullBundleFile(t, inc, []imo.Pair{{Base: src.ref("team/app:v1"), Final: src.ref("team/app:v2")}})
	editPlan(t, arc, func(p *archive.Plan) {
		for k := range p.Blobs {
			if !p.Blobs[k].Included {
				p.Blobs[k].HeldBy = []string{"site/secret/base", "site/public/base", "elsewhere/base"}
			}
		}
	})
	dst := newTestRegistry(t, func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if strings.HasPrefix(r.URL.Path, "/v2/site/secret/") {
				http.Error(w, `{"errors":[{"code":"DENIED","message":"no"}]}`, http.StatusForbidden)
				return
			}
			h.ServeHTTP(w, r)
		})
	})
	dst.write(t, dst.ref("elsewhere/base:v1"), pair.V1)
	dst.resetCounts()
	ctx := context.Background()
	// Only outside the prefix: missing.
	if _, err := vetArchive(ctx, inc, arc, dst.Host+"/site"); !errors.Is(err, imo.ErrMissingBlobs) {
		t.Errorf("VetArchive() with the blobs only outside the prefix = %v, want ErrMissingBlobs", err)
	}
	if n := dst.count(http.MethodHead, "/elsewhere/"); n != 0 {
		t.Errorf("vet asked %d times about a repository outside the prefix", n)
	}
	// Under the prefix, after a repository it may not read: found.
	dst.write(t, dst.ref("site/public/base:v1"), pair.V1)
	if _, err := pushArchive(ctx, inc, arc, dst.Host+"/site"); err != nil {
		t.Errorf("PushArchive() = %v; want the blobs mounted from site/public/base", err)
	}
	// Pushed to an explicit reference, the archive names no mount source.
	single := pullFile(t, inc, src.ref("team/app:v1"), src.ref("team/app:v2"))
	editPlan(t, single, func(p *archive.Plan) {
		for k := range p.Blobs {
			if !p.Blobs[k].Included {
				p.Blobs[k].HeldBy = []string{"site/public/base"}
			}
		}
	})
	if _, err := vetArchive(ctx, inc, single, dst.ref("site/other:v2")); !errors.Is(err, imo.ErrMissingBlobs) {
		t.Errorf("VetArchive(reference) = %v, want ErrMissingBlobs", err)
	}
}

func TestHeldByLimit(t *testing.T) {
	t.Parallel()
	// An archive naming 100,000 repositories per blob (or the 65 an
	// earlier imo may have written) is read quickly, keeping the first 64,
	// and pushes where the destination holds the blobs.
	src := newTestRegistry(t, nil)
	pair := newAppPair(t, sandbox.OCI, "linux/amd64")
	src.write(t, src.ref("app:v1"), pair.V1)
	src.write(t, src.ref("app:v2"), pair.V2)
	arc := pullFile(t, imo.New(imo.WithPlainHTTP()), src.ref("app:v1"), src.ref("app:v2"))
	editPlan(t, arc, func(p *archive.Plan) {
		for k := range p.Blobs {
			if !p.Blobs[k].Included {
				for n := range 100_000 {
					p.Blobs[k].HeldBy = append(p.Blobs[k].HeldBy, fmt.Sprintf("r%d", n))
				}
			}
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	plan, err := archive.Inspect(ctx, arc)
	if err != nil {
		t.Fatalf("Inspect() = %v", err)
	}
	for _, b := range plan.Blobs {
		if len(b.HeldBy) > 64 {
			t.Errorf("Inspect() keeps %d repositories for %s", len(b.HeldBy), b.Digest)
		}
	}
	dst := newTestRegistry(t, nil)
	dst.write(t, dst.ref("app:v1"), pair.V1)
	if _, err := pushArchive(ctx, imo.New(imo.WithPlainHTTP()), arc, dst.ref("app:v2")); err != nil {
		t.Errorf("PushArchive() = %v", err)
	}
}

func TestHeldByManyRepositories(t *testing.T) {
	t.Parallel()
	// The far side holds the base in 17 repositories that sort before the
	// target's prefix, and in one under it: push still mounts from there.
	src := newTestRegistry(t, nil)
	pair := newAppPair(t, sandbox.OCI, "linux/amd64")
	src.write(t, src.ref("team/app:v1"), pair.V1)
	src.write(t, src.ref("team/app:v2"), pair.V2)
	site := newTestRegistry(t, nil)
	for n := range 17 {
		site.write(t, site.ref(fmt.Sprintf("aaa/r%02d:v1", n)), pair.V1)
	}
	site.write(t, site.ref("site/base:v1"), pair.V1)
	ctx := context.Background()
	inc := imo.New(imo.WithPlainHTTP())
	inv, err := inc.Inventory(ctx, site.Host)
	if err != nil {
		t.Fatal(err)
	}
	arc := pullBundleFile(t, imo.New(imo.WithPlainHTTP(), imo.WithHave(inv)), []imo.Pair{{Base: imo.Scratch, Final: src.ref("team/app:v2")}})
	if _, err := pushArchive(ctx, inc, arc, site.Host+"/site"); err != nil {
		t.Errorf("PushArchive() = %v; want the left-out blobs mounted from site/base", err)
	}
}

func TestHeldByPrefixRepository(t *testing.T) {
	t.Parallel()
	// The inventory of reg/mirror covers the repository mirror itself,
	// and so do mounts into the target reg/mirror.
	src := newTestRegistry(t, nil)
	pair := newAppPair(t, sandbox.OCI, "linux/amd64")
	src.write(t, src.ref("team/app:v2"), pair.V2)
	site := newTestRegistry(t, nil)
	site.write(t, site.ref("mirror:v1"), pair.V1)
	ctx := context.Background()
	inc := imo.New(imo.WithPlainHTTP())
	inv, err := inc.Inventory(ctx, site.Host+"/mirror")
	if err != nil {
		t.Fatal(err)
	}
	arc := pullBundleFile(t, imo.New(imo.WithPlainHTTP(), imo.WithHave(inv)), []imo.Pair{{Base: imo.Scratch, Final: src.ref("team/app:v2")}})
	if _, err := pushArchive(ctx, inc, arc, site.Host+"/mirror"); err != nil {
		t.Errorf("PushArchive() = %v; the inventory saw the blobs in the repository mirror", err)
	}
}

// TestSentArchives is a one-way link: no inventory comes back, and each
// pull leaves out what the earlier archives sent, so the second carries
// only what changed, and pushes digest for digest where the first was
// pushed.
func TestSentArchives(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	src, pair := setup(t, oci, "linux/amd64", "linux/arm64")
	inc := imo.New(imo.WithPlainHTTP())
	first := pullFile(t, inc, imo.Scratch, src.ref("app:v1"))
	a, err := archive.Open(first)
	if err != nil {
		t.Fatal(err)
	}
	sent := imo.New(imo.WithPlainHTTP(), imo.WithSent(a))
	a.Close()
	second := pullFile(t, sent, imo.Scratch, src.ref("app:v2"))
	if got, want := included(t, second), included(t, pullFile(t, inc, src.ref("app:v1"), src.ref("app:v2"))); !slices.Equal(got, want) {
		t.Errorf("with the first archive sent, the second carries %v; v1→v2 carries %v", got, want)
	}
	b, err := archive.Open(second)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if s := b.Plan().Sent; len(s) != 1 || s[0].Archive != "difference.tar" || s[0].Plan == (v1.Hash{}) {
		t.Errorf("the plan lists the archives sent as %+v", s)
	}
	for _, pb := range b.Plan().Blobs {
		if !pb.Included && pb.Reason != archive.SentIn("difference.tar") {
			t.Errorf("%s is left out %q, want as sent in difference.tar", pb.Digest, pb.Reason)
		}
	}
	dst := newTestRegistry(t, nil)
	for _, step := range []struct{ path, tag string }{{first, "v1"}, {second, "v2"}} {
		if err := inc.Push(ctx, step.path, dst.ref("app:"+step.tag)); err != nil {
			t.Fatalf("push of the %s archive: %v", step.tag, err)
		}
	}
	if got, err := headDigest(dst.ref("app:v2")); err != nil || got != digest(t, pair.V2) {
		t.Errorf("app:v2 at the far side is %v (%v), want %s", got, err, digest(t, pair.V2))
	}
	if _, err := imo.New(imo.WithSent(nil)).Resolve(ctx, imo.Pair{Base: imo.Scratch, Final: src.ref("app:v2")}); !errors.Is(err, imo.ErrInvalidOption) {
		t.Errorf("WithSent(nil) = %v, want ErrInvalidOption", err)
	}
}
