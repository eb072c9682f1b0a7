package imo_test

import (
	"context"
	"errors"
	"net/http"
	"os"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/imokit/imo"
)

// TestHave ships web:v2 whole, takes the far side's inventory, and then
// ships api:v3 and worker:v3 against it: the second bundle carries nothing
// the far side holds, and its push mounts the shared layers from where the
// inventory saw them.
func TestHave(t *testing.T) {
	src, p, _ := bundleSetup(t, docker)
	site := newTestRegistry(t, nil)
	ctx := context.Background()
	inc := imo.New(imo.WithPlainHTTP())
	first := pullBundleFile(t, inc, []imo.Pair{{Base: imo.Scratch, Final: src.ref("team/web:v2")}})
	if _, err := inc.PushArchive(ctx, first, site.Host+"/site/"); err != nil {
		t.Fatalf("PushArchive(first) = %v", err)
	}
	inv, err := inc.Inventory(ctx, site.Host+"/site")
	if err != nil {
		t.Fatalf("Inventory() = %v", err)
	}

	withHave := imo.New(imo.WithPlainHTTP(), imo.WithHave(inv))
	pairs := []imo.Pair{{Base: imo.Scratch, Final: src.ref("team/api:v3")}, {Base: imo.Scratch, Final: src.ref("team/worker:v3")}}
	second := pullBundleFile(t, withHave, pairs)
	plan, err := imo.Inspect(ctx, second)
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(second)
	if err != nil {
		t.Fatal(err)
	}
	names := tarNames(t, b)
	for _, ib := range inv.Blobs {
		if hasBlob(names, ib.Digest) && ib.Kind != imo.InventoryManifest {
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
			if !strings.HasPrefix(pb.Reason, "in the inventory of "+site.Host+"/site taken ") {
				t.Errorf("the patch layer is left out because %q", pb.Reason)
			}
		}
	}
	if len(heldBy) != 1 || heldBy[0] != "site/team/web" {
		t.Errorf("the plan says the patch layer is held by %v, want [site/team/web]", heldBy)
	}
	full, err := inc.PlanBundle(ctx, pairs)
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
	if _, err := inc.VetArchive(ctx, second, site.Host+"/site"); err != nil {
		t.Fatalf("VetArchive(second) = %v", err)
	}
	results, err := inc.PushArchive(ctx, second, site.Host+"/site")
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
	_, err = inc.VetArchive(ctx, second, other.Host+"/site")
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
	_, err := imo.New(imo.WithHave(nil)).Plan(context.Background(), imo.Scratch, "example.com/a:b")
	if !errors.Is(err, imo.ErrInvalidOption) {
		t.Errorf("WithHave(nil) = %v, want ErrInvalidOption", err)
	}
}
