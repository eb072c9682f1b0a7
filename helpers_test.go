package imo_test

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/imokit/imo"
	"github.com/imokit/imo/archive"
	"github.com/imokit/imo/internal/sandbox"
)

// testRegistry is a sandbox registry that the test stops when it ends.
type testRegistry struct{ *sandbox.Registry }

// newTestRegistry starts a plain-HTTP registry; wrap, when not nil, wraps
// its handler (for auth or checks).
func newTestRegistry(t testing.TB, wrap func(http.Handler) http.Handler) *testRegistry {
	t.Helper()
	return newTLSRegistry(t, wrap, nil)
}

// newTLSRegistry is newTestRegistry serving HTTPS with cfg, or plain HTTP
// when cfg is nil.
func newTLSRegistry(t testing.TB, wrap func(http.Handler) http.Handler, cfg *tls.Config) *testRegistry {
	t.Helper()
	r := sandbox.NewRegistry(wrap, cfg)
	t.Cleanup(r.Close)
	return &testRegistry{r}
}

func (r *testRegistry) ref(repo string) string          { return r.Ref(repo) }
func (r *testRegistry) count(method, substr string) int { return r.Count(method, substr) }
func (r *testRegistry) resetCounts()                    { r.ResetCounts() }

// write pushes an image or index to ref in this registry.
func (r *testRegistry) write(t testing.TB, ref string, img any) {
	t.Helper()
	if err := r.Write(context.Background(), ref, img); err != nil {
		t.Fatal(err)
	}
}

var (
	docker = sandbox.Docker
	oci    = sandbox.OCI
)

// newAppPair builds a sample v1 and v2 in format f for the platforms.
func newAppPair(t testing.TB, f sandbox.Format, platforms ...string) *sandbox.AppPair {
	t.Helper()
	pair, err := sandbox.NewAppPair(f, platforms...)
	if err != nil {
		t.Fatal(err)
	}
	return pair
}

type digester interface{ Digest() (v1.Hash, error) }

func digest(t testing.TB, d digester) v1.Hash {
	t.Helper()
	h, err := d.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// pull runs Pull and returns the whole archive.
func pull(t testing.TB, inc *imo.Incremental, base, final string) ([]byte, error) {
	t.Helper()
	rc, err := inc.Pull(context.Background(), base, final)
	if err != nil {
		return nil, err
	}
	b, err := io.ReadAll(rc)
	if cerr := rc.Close(); err == nil {
		err = cerr
	}
	return b, err
}

// pullFile runs Pull, writes the archive into the test's temporary
// directory and returns its path.
func pullFile(t testing.TB, inc *imo.Incremental, base, final string) string {
	t.Helper()
	b, err := pull(t, inc, base, final)
	if err != nil {
		t.Fatalf("Pull(%s, %s) = %v", base, final, err)
	}
	path := filepath.Join(t.TempDir(), "difference.tar")
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// tarNames lists the entry names of a tar archive in order.
func tarNames(t testing.TB, b []byte) []string {
	t.Helper()
	var names []string
	tr := tar.NewReader(bytes.NewReader(b))
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return names
		}
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, h.Name)
	}
}

func hasBlob(names []string, h v1.Hash) bool {
	for _, n := range names {
		if n == fmt.Sprintf("blobs/%s/%s", h.Algorithm, h.Hex) {
			return true
		}
	}
	return false
}

// entry returns the content of the named entry of a tar archive.
func entry(t testing.TB, arc []byte, name string) []byte {
	t.Helper()
	tr := tar.NewReader(bytes.NewReader(arc))
	for {
		h, err := tr.Next()
		if err != nil {
			t.Fatalf("no %s in archive: %v", name, err)
		}
		if h.Name == name {
			b, err := io.ReadAll(tr)
			if err != nil {
				t.Fatal(err)
			}
			return b
		}
	}
}

// readLayout returns the digest of the image an archive's index.json names.
func readLayout(t testing.TB, arc []byte) v1.Hash {
	t.Helper()
	idx, err := v1.ParseIndexManifest(bytes.NewReader(entry(t, arc, "index.json")))
	if err != nil {
		t.Fatal(err)
	}
	if len(idx.Manifests) != 1 {
		t.Fatalf("index.json lists %d images, want 1", len(idx.Manifests))
	}
	return idx.Manifests[0].Digest
}

// extract unpacks a tar archive into dir.
func extract(arc []byte, dir string) error {
	tr := tar.NewReader(bytes.NewReader(arc))
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		path := filepath.Join(dir, filepath.FromSlash(h.Name))
		if h.Typeflag == tar.TypeDir {
			if err := os.MkdirAll(path, 0o755); err != nil {
				return err
			}
			continue
		}
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			return err
		}
		b, err := io.ReadAll(tr)
		if err != nil {
			return err
		}
		if err := os.WriteFile(path, b, 0o644); err != nil {
			return err
		}
	}
}

// pullToFile resolves a pull of one image and writes its archive to path.
func pullToFile(ctx context.Context, inc *imo.Incremental, base, final, path string) (*archive.Plan, error) {
	return resolveToFile(ctx, inc, imo.Pair{Base: base, Final: final}, path)
}

// pullBundleToFile resolves a bundle and writes its archive to path.
func pullBundleToFile(ctx context.Context, inc *imo.Incremental, pairs []imo.Pair, path string) (*archive.Plan, error) {
	return resolveToFile(ctx, inc, imo.Bundle(pairs), path)
}

func resolveToFile(ctx context.Context, inc *imo.Incremental, images imo.Images, path string) (*archive.Plan, error) {
	d, err := inc.Resolve(ctx, images)
	if err != nil {
		return nil, err
	}
	defer d.Close()
	return d.Plan(), d.WriteFile(ctx, path)
}

// pullBundle resolves a bundle and streams its archive, as Pull does.
func pullBundle(ctx context.Context, inc *imo.Incremental, pairs []imo.Pair) (io.ReadCloser, error) {
	d, err := inc.Resolve(ctx, imo.Bundle(pairs))
	if err != nil {
		return nil, err
	}
	pr, pw := io.Pipe()
	go func() {
		defer d.Close()
		pw.CloseWithError(d.WriteTo(ctx, pw))
	}()
	return pr, nil
}

// planOf is the plan of a pull of one image.
func planOf(ctx context.Context, inc *imo.Incremental, base, final string) (*archive.Plan, error) {
	return planFor(ctx, inc, imo.Pair{Base: base, Final: final})
}

// planBundle is the plan of a bundle.
func planBundle(ctx context.Context, inc *imo.Incremental, pairs []imo.Pair) (*archive.Plan, error) {
	return planFor(ctx, inc, imo.Bundle(pairs))
}

func planFor(ctx context.Context, inc *imo.Incremental, images imo.Images) (*archive.Plan, error) {
	d, err := inc.Resolve(ctx, images)
	if err != nil {
		return nil, err
	}
	defer d.Close()
	return d.Plan(), nil
}

// pushArchive opens the archive at path and pushes it.
func pushArchive(ctx context.Context, inc *imo.Incremental, path, dst string) ([]imo.ImageResult, error) {
	a, err := archive.Open(path)
	if err != nil {
		return nil, err
	}
	defer a.Close()
	return inc.PushArchive(ctx, a, dst)
}

// vetArchive opens the archive at path and vets it.
func vetArchive(ctx context.Context, inc *imo.Incremental, path, dst string) ([]imo.ImageResult, error) {
	a, err := archive.Open(path)
	if err != nil {
		return nil, err
	}
	defer a.Close()
	return inc.VetArchive(ctx, a, dst)
}

// pushStream spools an archive from r into dir and pushes it.
func pushStream(ctx context.Context, inc *imo.Incremental, dir string, r io.Reader, dst string) ([]imo.ImageResult, error) {
	a, err := archive.Spool(ctx, r, dir, "the stream")
	if err != nil {
		return nil, err
	}
	defer a.Close()
	return inc.PushArchive(ctx, a, dst)
}
