package imo_test

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"log"
	"maps"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/imokit/imo"
)

// repoBlobs stores blobs per repository, as the distribution registry
// does, so that a blob pushed to one repository is absent from another.
// go-containerregistry's in-process registry shares blobs across
// repositories by default. Blobs listed in corrupt are served with a
// flipped byte.
type repoBlobs struct {
	mu      sync.Mutex
	blobs   map[string]map[v1.Hash][]byte
	corrupt map[v1.Hash]bool
}

func (b *repoBlobs) get(repo string, h v1.Hash) ([]byte, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	c, ok := b.blobs[repo][h]
	return c, ok
}

func (b *repoBlobs) Stat(_ context.Context, repo string, h v1.Hash) (int64, error) {
	c, ok := b.get(repo, h)
	if !ok {
		return 0, registry.ErrNotFound
	}
	return int64(len(c)), nil
}

func (b *repoBlobs) Get(_ context.Context, repo string, h v1.Hash) (io.ReadCloser, error) {
	c, ok := b.get(repo, h)
	if !ok {
		return nil, registry.ErrNotFound
	}
	b.mu.Lock()
	corrupt := b.corrupt[h]
	b.mu.Unlock()
	if corrupt {
		c = append([]byte(nil), c...)
		c[len(c)/2] ^= 0xff
	}
	return io.NopCloser(bytes.NewReader(c)), nil
}

func (b *repoBlobs) Put(_ context.Context, repo string, h v1.Hash, rc io.ReadCloser) error {
	defer rc.Close()
	// The in-process registry names the repository of an upload
	// "/v2/REPO/blobs/uploads/ID" as "REPO/blobs".
	repo = strings.TrimSuffix(repo, "/blobs")
	c, err := io.ReadAll(rc)
	if err != nil {
		return err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.blobs[repo] == nil {
		b.blobs[repo] = map[v1.Hash][]byte{}
	}
	b.blobs[repo][h] = c
	return nil
}

// testRegistry is an in-process registry on 127.0.0.1 that counts the
// requests it serves.
type testRegistry struct {
	*httptest.Server
	Host  string
	blobs *repoBlobs

	mu       sync.Mutex
	requests []string // "METHOD path?query"
}

// newTestRegistry starts a registry that the test stops when it ends.
// wrap, when not nil, wraps its handler (for auth or TLS checks).
func newTestRegistry(t testing.TB, wrap func(http.Handler) http.Handler) *testRegistry {
	t.Helper()
	return newTLSRegistry(t, wrap, nil)
}

// newTLSRegistry is newTestRegistry serving HTTPS with cfg, or plain HTTP
// when cfg is nil.
func newTLSRegistry(t testing.TB, wrap func(http.Handler) http.Handler, cfg *tls.Config) *testRegistry {
	t.Helper()
	r := &testRegistry{blobs: &repoBlobs{blobs: map[string]map[v1.Hash][]byte{}, corrupt: map[v1.Hash]bool{}}}
	var h http.Handler = registry.New(registry.WithBlobHandler(r.blobs), registry.Logger(log.New(io.Discard, "", 0)))
	if wrap != nil {
		h = wrap(h)
	}
	r.Server = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		r.mu.Lock()
		r.requests = append(r.requests, req.Method+" "+req.URL.RequestURI())
		r.mu.Unlock()
		h.ServeHTTP(w, req)
	}))
	if cfg != nil {
		r.TLS = cfg
		r.StartTLS()
	} else {
		r.Start()
	}
	t.Cleanup(r.Close)
	r.Host = r.Listener.Addr().String()
	return r
}

// count returns how many requests matched method and contained substr.
func (r *testRegistry) count(method, substr string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, q := range r.requests {
		if strings.HasPrefix(q, method+" ") && strings.Contains(q, substr) {
			n++
		}
	}
	return n
}

func (r *testRegistry) resetCounts() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.requests = nil
}

// ref returns a reference to repo in this registry.
func (r *testRegistry) ref(repo string) string { return r.Host + "/" + repo }

// write pushes an image or index to ref in this registry.
func (r *testRegistry) write(t testing.TB, ref string, img any) {
	t.Helper()
	parsed, err := name.ParseReference(ref, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	switch v := img.(type) {
	case v1.Image:
		err = remote.Write(parsed, v)
	case v1.ImageIndex:
		err = remote.WriteIndex(parsed, v)
	default:
		t.Fatalf("write(%T)", img)
	}
	if err != nil {
		t.Fatalf("writing %s: %v", ref, err)
	}
}

// layer builds a gzip-compressed tar layer holding files (name → content).
func layer(t testing.TB, mt types.MediaType, files ...string) v1.Layer {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	tw := tar.NewWriter(zw)
	for i := 0; i+1 < len(files); i += 2 {
		body := []byte(files[i+1])
		if err := tw.WriteHeader(&tar.Header{Name: files[i], Mode: 0o644, Size: int64(len(body)), Typeflag: tar.TypeReg}); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write(body); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(buf.Bytes())), nil
	}, tarball.WithMediaType(mt))
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// format is a family of media types.
type format struct {
	name     string
	manifest types.MediaType
	config   types.MediaType
	layer    types.MediaType
	idx      types.MediaType
}

var (
	docker = format{"docker", types.DockerManifestSchema2, types.DockerConfigJSON, types.DockerLayer, types.DockerManifestList}
	oci    = format{"oci", types.OCIManifestSchema1, types.OCIConfigJSON, types.OCILayer, types.OCIImageIndex}
)

// image builds an image of format f for platform p from layers.
func (f format) image(t testing.TB, p v1.Platform, layers ...v1.Layer) v1.Image {
	t.Helper()
	img, err := mutate.AppendLayers(empty.Image, layers...)
	if err != nil {
		t.Fatal(err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture, cf.Variant = p.OS, p.Architecture, p.Variant
	if img, err = mutate.ConfigFile(img, cf); err != nil {
		t.Fatal(err)
	}
	img = mutate.MediaType(img, f.manifest)
	return mutate.ConfigMediaType(img, f.config)
}

// index builds an index of format f from platform-image pairs.
func (f format) index(t testing.TB, imgs map[string]v1.Image) v1.ImageIndex {
	t.Helper()
	idx := mutate.IndexMediaType(empty.Index, f.idx)
	for _, ps := range slices.Sorted(maps.Keys(imgs)) {
		p, err := v1.ParsePlatform(ps)
		if err != nil {
			t.Fatal(err)
		}
		idx = mutate.AppendManifests(idx, mutate.IndexAddendum{Add: imgs[ps], Descriptor: v1.Descriptor{Platform: p}})
	}
	return idx
}

// appPair is a v1 and v2 of an application that share their lower layers:
// an OS layer per platform and a runtime layer, with an app layer that
// changes between versions.
type appPair struct {
	v1, v2 any // v1.Image or v1.ImageIndex
	// shared are the digests v2 shares with v1; changed are the layers
	// only v2 has.
	shared, changed []v1.Hash
}

var linuxAMD64 = v1.Platform{OS: "linux", Architecture: "amd64"}

// newAppPair builds the pair in format f for the given platforms; with one
// platform the images are single-platform.
func newAppPair(t testing.TB, f format, platforms ...string) appPair {
	t.Helper()
	var pair appPair
	runtime := layer(t, f.layer, "usr/lib/runtime.so", strings.Repeat("runtime library ", 512))
	v1s, v2s := map[string]v1.Image{}, map[string]v1.Image{}
	for _, ps := range platforms {
		p, err := v1.ParsePlatform(ps)
		if err != nil {
			t.Fatal(err)
		}
		osLayer := layer(t, f.layer, "etc/os-release", "ID=testos\nARCH="+ps+"\n", "bin/sh", strings.Repeat("shell "+ps, 300))
		app1 := layer(t, f.layer, "app/VERSION", "1.0.0 "+ps, "app/main", strings.Repeat("app one ", 400))
		app2 := layer(t, f.layer, "app/VERSION", "2.0.0 "+ps, "app/main", strings.Repeat("app two ", 400))
		v1s[ps] = f.image(t, *p, osLayer, runtime, app1)
		v2s[ps] = f.image(t, *p, osLayer, runtime, app2)
		pair.shared = append(pair.shared, digest(t, osLayer))
		pair.changed = append(pair.changed, digest(t, app2))
	}
	pair.shared = append(pair.shared, digest(t, runtime))
	if len(platforms) == 1 {
		pair.v1, pair.v2 = v1s[platforms[0]], v2s[platforms[0]]
	} else {
		pair.v1, pair.v2 = f.index(t, v1s), f.index(t, v2s)
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
func entry(t testing.TB, archive []byte, name string) []byte {
	t.Helper()
	tr := tar.NewReader(bytes.NewReader(archive))
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
func readLayout(t testing.TB, archive []byte) v1.Hash {
	t.Helper()
	idx, err := v1.ParseIndexManifest(bytes.NewReader(entry(t, archive, "index.json")))
	if err != nil {
		t.Fatal(err)
	}
	if len(idx.Manifests) != 1 {
		t.Fatalf("index.json lists %d images, want 1", len(idx.Manifests))
	}
	return idx.Manifests[0].Digest
}

// extract unpacks a tar archive into dir.
func extract(archive []byte, dir string) error {
	tr := tar.NewReader(bytes.NewReader(archive))
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
