// Package sandbox runs in-process registries on 127.0.0.1 and builds sample
// images for them, for imo's demo and tests.
package sandbox

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// Registry is go-containerregistry's in-process registry on 127.0.0.1,
// keeping blobs per repository as real registries do, and counting the
// requests it serves.
type Registry struct {
	*httptest.Server
	// Host is the registry's host:port.
	Host  string
	blobs *repoBlobs

	mu       sync.Mutex
	requests []string // "METHOD path?query"
}

// NewRegistry starts a registry. wrap, when not nil, wraps its handler (to
// add auth, say). With cfg it serves HTTPS, otherwise plain HTTP. opts are
// go-containerregistry's registry options (the referrers API, say). Close
// it when done.
func NewRegistry(wrap func(http.Handler) http.Handler, cfg *tls.Config, opts ...registry.Option) *Registry {
	r := &Registry{blobs: &repoBlobs{blobs: map[string]map[v1.Hash][]byte{}, corrupt: map[v1.Hash]bool{}}}
	reg := registry.New(append([]registry.Option{registry.WithBlobHandler(r.blobs), registry.Logger(log.New(io.Discard, "", 0))}, opts...)...)
	// Mounts are served behind wrap, as the registry itself is.
	var h http.Handler = http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if !r.blobs.mount(w, req) {
			reg.ServeHTTP(w, req)
		}
	})
	if wrap != nil {
		h = wrap(h)
	}
	r.Server = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		r.mu.Lock()
		uri, err := url.QueryUnescape(req.URL.RequestURI())
		if err != nil {
			uri = req.URL.RequestURI()
		}
		r.requests = append(r.requests, req.Method+" "+uri)
		r.mu.Unlock()
		h.ServeHTTP(w, req)
	}))
	r.Config.ErrorLog = log.New(io.Discard, "", 0) // refused handshakes are what TLS tests provoke
	if cfg != nil {
		r.TLS = cfg
		r.StartTLS()
	} else {
		r.Start()
	}
	r.Host = r.Listener.Addr().String()
	return r
}

// Ref returns a reference to repo (with a tag or digest) in this registry.
func (r *Registry) Ref(repo string) string { return r.Host + "/" + repo }

// Count returns how many requests used method and contained substr in
// their path or query, unescaped.
func (r *Registry) Count(method, substr string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return countRequests(r.requests, method, substr)
}

// ResetCounts forgets the requests served so far.
func (r *Registry) ResetCounts() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.requests = nil
}

// Corrupt makes the registry serve the blob h with one byte flipped.
func (r *Registry) Corrupt(h v1.Hash) {
	r.blobs.mu.Lock()
	defer r.blobs.mu.Unlock()
	r.blobs.corrupt[h] = true
}

// Write pushes a v1.Image or v1.ImageIndex to ref in this registry through
// go-containerregistry, with opts added (for auth or TLS).
func (r *Registry) Write(ctx context.Context, ref string, img any, opts ...remote.Option) error {
	nameOpts := []name.Option{}
	if r.TLS == nil {
		nameOpts = append(nameOpts, name.Insecure)
	}
	parsed, err := name.ParseReference(ref, nameOpts...)
	if err != nil {
		return err
	}
	opts = append(opts, remote.WithContext(ctx))
	switch v := img.(type) {
	case v1.Image:
		err = remote.Write(parsed, v, opts...)
	case v1.ImageIndex:
		err = remote.WriteIndex(parsed, v, opts...)
	default:
		return fmt.Errorf("writing %s: %T is neither an image nor an index", ref, img)
	}
	if err != nil {
		return fmt.Errorf("writing %s: %w", ref, err)
	}
	return nil
}

// repoBlobs stores blobs per repository, so that a blob pushed to one
// repository is absent from another; go-containerregistry's registry shares
// them by default. Blobs listed in corrupt are served with a flipped byte.
type repoBlobs struct {
	mu      sync.Mutex
	blobs   map[string]map[v1.Hash][]byte
	corrupt map[v1.Hash]bool
}

func (b *repoBlobs) get(repo string, h v1.Hash) ([]byte, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	c, ok := b.blobs[repo][h]
	if ok && b.corrupt[h] {
		c = append([]byte(nil), c...)
		c[len(c)/2] ^= 0xff
	}
	return c, ok
}

// Stat implements registry.BlobStatHandler.
func (b *repoBlobs) Stat(_ context.Context, repo string, h v1.Hash) (int64, error) {
	c, ok := b.get(repo, h)
	if !ok {
		return 0, registry.ErrNotFound
	}
	return int64(len(c)), nil
}

// Get implements registry.BlobHandler.
func (b *repoBlobs) Get(_ context.Context, repo string, h v1.Hash) (io.ReadCloser, error) {
	c, ok := b.get(repo, h)
	if !ok {
		return nil, registry.ErrNotFound
	}
	return io.NopCloser(bytes.NewReader(c)), nil
}

// mount serves a cross-repository blob mount (POST
// /v2/REPO/blobs/uploads/?mount=DIGEST&from=OTHER), which the in-process
// registry lacks, when OTHER holds the blob; it reports whether it
// answered.
func (b *repoBlobs) mount(w http.ResponseWriter, req *http.Request) bool {
	repo, ok := strings.CutSuffix(strings.TrimPrefix(req.URL.Path, "/v2/"), "/blobs/uploads/")
	q := req.URL.Query()
	if req.Method != http.MethodPost || !ok || q.Get("mount") == "" || q.Get("from") == "" {
		return false
	}
	h, err := v1.NewHash(q.Get("mount"))
	if err != nil {
		return false
	}
	c, ok := b.get(q.Get("from"), h)
	if !ok {
		return false
	}
	b.mu.Lock()
	if b.blobs[repo] == nil {
		b.blobs[repo] = map[v1.Hash][]byte{}
	}
	b.blobs[repo][h] = c
	b.mu.Unlock()
	w.Header().Set("Location", "/v2/"+repo+"/blobs/"+h.String())
	w.Header().Set("Docker-Content-Digest", h.String())
	w.WriteHeader(http.StatusCreated)
	return true
}

// Put implements registry.BlobPutHandler.
func (b *repoBlobs) Put(_ context.Context, repo string, h v1.Hash, rc io.ReadCloser) error {
	defer rc.Close()
	// The in-process registry names the repository of an upload to
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
