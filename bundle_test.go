package imo_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/imokit/imo"
	"github.com/imokit/imo/archive"
	"github.com/imokit/imo/internal/sandbox"
)

var bundleApps = []string{"web", "api", "worker"}

// bundleSetup writes a product of three apps, two platforms each, into a
// source registry under team/APP:TAG and returns the pairs of a bundle of
// six images: each app's v2 and v3 against its v1.
func bundleSetup(t *testing.T, f sandbox.Format) (*testRegistry, *sandbox.Product, []imo.Pair) {
	t.Helper()
	p, err := sandbox.NewProduct(f, bundleApps, "linux/amd64", "linux/arm64")
	if err != nil {
		t.Fatal(err)
	}
	src := newTestRegistry(t, nil)
	var pairs []imo.Pair
	for _, app := range bundleApps {
		for _, tag := range []string{"v1", "v2", "v3"} {
			src.write(t, src.ref("team/"+app+":"+tag), p.Images[app+":"+tag])
		}
		for _, tag := range []string{"v2", "v3"} {
			pairs = append(pairs, imo.Pair{Base: src.ref("team/" + app + ":v1"), Final: src.ref("team/" + app + ":" + tag)})
		}
	}
	return src, p, pairs
}

// pullBundleFile writes the bundle of pairs to a file and returns its path.
func pullBundleFile(t *testing.T, inc *imo.Incremental, pairs []imo.Pair) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "bundle.tar")
	if _, err := pullBundleToFile(context.Background(), inc, pairs, path); err != nil {
		t.Fatalf("PullBundleToFile() = %v", err)
	}
	return path
}

func TestPullBundle(t *testing.T) {
	t.Parallel()
	for _, f := range []sandbox.Format{docker, oci} {
		t.Run(f.Name, func(t *testing.T) {
			src, p, pairs := bundleSetup(t, f)
			inc := imo.New(imo.WithPlainHTTP())
			path := pullBundleFile(t, inc, pairs)
			b, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}

			idx, err := v1.ParseIndexManifest(bytes.NewReader(entry(t, b, "index.json")))
			if err != nil {
				t.Fatal(err)
			}
			if len(idx.Manifests) != len(pairs) {
				t.Fatalf("index.json lists %d images, want %d", len(idx.Manifests), len(pairs))
			}
			for n, d := range idx.Manifests {
				want := pairs[n].Final
				if got := d.Annotations["org.opencontainers.image.ref.name"]; got != want {
					t.Errorf("index.json entry %d is named %q, want %q", n, got, want)
				}
				app, tag, _ := strings.Cut(strings.TrimPrefix(want, src.ref("team/")), ":")
				if d.Digest != digest(t, p.Images[app+":"+tag]) {
					t.Errorf("index.json entry %d (%s) has digest %s, want the source's", n, want, d.Digest)
				}
			}

			names := tarNames(t, b)
			count := map[string]int{}
			for _, n := range names {
				count[n]++
				if count[n] > 1 {
					t.Errorf("%s is in the archive %d times", n, count[n])
				}
			}
			for _, h := range p.Base {
				if hasBlob(names, h) {
					t.Errorf("base layer %s is in the archive; every app's v1 has it", h)
				}
			}
			for _, h := range append([]v1.Hash{p.Patch}, p.Own...) {
				if !hasBlob(names, h) {
					t.Errorf("layer %s is not in the archive", h)
				}
			}

			// The stream and a second pull give the same bytes.
			rc, err := pullBundle(context.Background(), inc, pairs)
			if err != nil {
				t.Fatal(err)
			}
			streamed, err := io.ReadAll(rc)
			if cerr := rc.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				t.Fatalf("PullBundle() = %v", err)
			}
			if !bytes.Equal(streamed, b) {
				t.Errorf("PullBundle() and PullBundleToFile() wrote different archives")
			}

			plan, err := archive.Inspect(context.Background(), path)
			if err != nil {
				t.Fatal(err)
			}
			if len(plan.Images) != len(pairs) {
				t.Errorf("Inspect() lists %d images, want %d", len(plan.Images), len(pairs))
			}
			carried, whole := plan.Bytes()
			var sum int64
			for n := range plan.Images {
				_, w := plan.ImageBytes(n)
				sum += w
			}
			if whole >= sum || carried >= whole {
				t.Errorf("Bytes() = %d carried of %d, sum of images %d: want deduplication to show", carried, whole, sum)
			}
		})
	}
}

func TestPullBundleSharedBase(t *testing.T) {
	t.Parallel()
	// A blob is left out only when every image that uses it has it in its
	// base: here web:v2 is diffed against web:v1, api:v2 against scratch.
	src, p, _ := bundleSetup(t, docker)
	inc := imo.New(imo.WithPlainHTTP())
	pairs := []imo.Pair{
		{Base: src.ref("team/web:v1"), Final: src.ref("team/web:v2")},
		{Base: imo.Scratch, Final: src.ref("team/api:v2")},
	}
	plan, err := planBundle(context.Background(), inc, pairs)
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range plan.Blobs {
		if !b.Included {
			t.Errorf("blob %s is left out (%s), but api:v2's base is scratch", b.Digest, b.Reason)
		}
	}
	if len(plan.Blobs) == 0 || len(p.Base) == 0 {
		t.Fatal("no blobs planned")
	}
}

func TestPushBundle(t *testing.T) {
	t.Parallel()
	src, p, pairs := bundleSetup(t, oci)
	inc := imo.New(imo.WithPlainHTTP())
	path := pullBundleFile(t, inc, pairs)

	dst := newTestRegistry(t, nil)
	for _, app := range bundleApps {
		dst.write(t, dst.ref("mirror/team/"+app+":v1"), p.Images[app+":v1"])
	}
	dst.resetCounts()
	target := dst.Host + "/mirror"
	results, err := vetArchive(context.Background(), inc, path, target)
	if err != nil {
		t.Fatalf("VetArchive() = %v", err)
	}
	if len(results) != len(pairs) {
		t.Fatalf("VetArchive() reports %d images, want %d", len(results), len(pairs))
	}
	if n := dst.count(http.MethodPost, "") + dst.count(http.MethodPut, ""); n != 0 {
		t.Errorf("VetArchive() sent %d POST/PUT requests", n)
	}

	results, err = pushArchive(context.Background(), inc, path, target)
	if err != nil {
		t.Fatalf("PushArchive() = %v", err)
	}
	for n, r := range results {
		app, tag, _ := strings.Cut(strings.TrimPrefix(pairs[n].Final, src.ref("team/")), ":")
		if want := dst.ref("mirror/team/" + app + ":" + tag); r.Destination.String() != want {
			t.Errorf("image %d went to %s, want %s", n, r.Destination, want)
		}
		if r.Digest != digest(t, p.Images[app+":"+tag]) {
			t.Errorf("image %d was pushed as %s, want the source's digest", n, r.Digest)
		}
		if got := manifests(t, r.Destination.String()); !equalManifests(got, manifests(t, pairs[n].Final)) {
			t.Errorf("%s: manifests differ from the source's", r.Destination)
		}
	}
	// Each carried blob is uploaded once and mounted into the other
	// repositories that need it; base layers are never sent.
	if n := dst.count(http.MethodPut, "digest="+p.Patch.String()); n != 1 {
		t.Errorf("the shared patch layer was uploaded %d times, want 1", n)
	}
	if n := dst.count(http.MethodPost, "mount="+p.Patch.String()); n != len(bundleApps)-1 {
		t.Errorf("the shared patch layer was mounted %d times, want %d", n, len(bundleApps)-1)
	}
	for _, h := range p.Base {
		if n := dst.count(http.MethodPut, "digest="+h.String()) + dst.count(http.MethodPost, "mount="+h.String()); n != 0 {
			t.Errorf("base layer %s was sent %d times", h, n)
		}
	}
	for _, h := range p.Own {
		if n := dst.count(http.MethodPut, "digest="+h.String()); n != 1 {
			t.Errorf("layer %s was uploaded %d times, want 1", h, n)
		}
	}
}

func TestPushBundlePartial(t *testing.T) {
	t.Parallel()
	// The destination lacks api's base: api's images fail, whole, and the
	// others are pushed.
	_, p, pairs := bundleSetup(t, docker)
	inc := imo.New(imo.WithPlainHTTP())
	path := pullBundleFile(t, inc, pairs)
	dst := newTestRegistry(t, nil)
	for _, app := range []string{"web", "worker"} {
		dst.write(t, dst.ref("site/team/"+app+":v1"), p.Images[app+":v1"])
	}
	results, err := pushArchive(context.Background(), inc, path, dst.Host+"/site/")
	if !errors.Is(err, imo.ErrMissingBlobs) {
		t.Fatalf("PushArchive() = %v, want ErrMissingBlobs", err)
	}
	for _, r := range results {
		failed := strings.Contains(r.Destination.String(), "/team/api:")
		if failed != (r.Err != nil) {
			t.Errorf("%s: err = %v, want failure %v", r.Destination, r.Err, failed)
		}
		_, herr := headDigest(r.Destination.String())
		if failed && herr == nil {
			t.Errorf("%s exists after its push failed", r.Destination)
		}
		if !failed && herr != nil {
			t.Errorf("%s: %v after a successful push", r.Destination, herr)
		}
	}
}

func TestBundleDestinations(t *testing.T) {
	t.Parallel()
	src, _, pairs := bundleSetup(t, docker)
	inc := imo.New(imo.WithPlainHTTP())
	bundle := pullBundleFile(t, inc, pairs[:2])
	single := pullFile(t, inc, src.ref("team/web:v1"), src.ref("team/web:v2"))
	dst := newTestRegistry(t, nil)
	tests := []struct {
		name, arc, dst string
		want           error
	}{
		{"bundle to a reference", bundle, dst.ref("team/web:v2"), imo.ErrInvalidReference},
		{"bundle to a prefix that is no path", bundle, dst.Host + "/Mirror", imo.ErrInvalidReference},
		{"bundle to no registry", bundle, "/mirror", imo.ErrInvalidReference},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := vetArchive(context.Background(), inc, tc.arc, tc.dst)
			if !errors.Is(err, tc.want) {
				t.Errorf("VetArchive(%s) = %v, want %v", tc.dst, err, tc.want)
			}
		})
	}
	// A bundle of one pair still goes to a target.
	one := pullBundleFile(t, inc, pairs[:1])
	results, err := vetArchive(context.Background(), inc, one, dst.Host+"/x")
	if len(results) != 1 || results[0].Destination.String() != dst.ref("x/team/web:v2") {
		t.Errorf("VetArchive(one-pair bundle, HOST/x) = %v, %v; want it at %s", results, err, dst.ref("x/team/web:v2"))
	}
	// A single image goes to a target when the destination ends in "/".
	results, err = vetArchive(context.Background(), inc, single, dst.Host+"/x/")
	var missing *imo.MissingBlobsError
	if !errors.As(err, &missing) || len(results) != 1 || results[0].Destination.String() != dst.ref("x/team/web:v2") {
		t.Errorf("VetArchive(single, HOST/x/) = %v, %v; want missing blobs at %s", results, err, dst.ref("x/team/web:v2"))
	}
}

func equalManifests(a, b [][]byte) bool {
	if len(a) != len(b) {
		return false
	}
	for n := range a {
		if !bytes.Equal(a[n], b[n]) {
			return false
		}
	}
	return true
}
