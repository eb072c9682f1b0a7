package imo_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"maps"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/imokit/imo"
	"github.com/imokit/imo/internal/sandbox"
	"github.com/imokit/imo/inventory"
	"go.uber.org/goleak"
)

// wantBlob is what an inventory should say of one digest.
type wantBlob struct {
	size  int64
	kind  string
	repos map[string]bool
}

// inventoryWant collects the expected blobs of images pushed to repositories.
type inventoryWant map[v1.Hash]*wantBlob

// add records art, pushed to repo, and everything it references, read
// through go-containerregistry.
func (w inventoryWant) add(t testing.TB, repo string, art sandbox.Artifact) {
	t.Helper()
	put := func(h v1.Hash, size int64, kind string) {
		b, ok := w[h]
		if !ok {
			b = &wantBlob{size: size, kind: kind, repos: map[string]bool{}}
			w[h] = b
		}
		b.repos[repo] = true
	}
	raw, err := art.RawManifest()
	if err != nil {
		t.Fatal(err)
	}
	put(digest(t, art), int64(len(raw)), inventory.KindManifest)
	switch v := art.(type) {
	case v1.ImageIndex:
		im, err := v.IndexManifest()
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range im.Manifests {
			img, err := v.Image(d.Digest)
			if err != nil {
				t.Fatal(err)
			}
			w.add(t, repo, img)
		}
	case v1.Image:
		m, err := v.Manifest()
		if err != nil {
			t.Fatal(err)
		}
		put(m.Config.Digest, m.Config.Size, inventory.KindConfig)
		for _, l := range m.Layers {
			put(l.Digest, l.Size, inventory.KindLayer)
		}
	}
}

// check compares inv's blobs with w, exactly.
func (w inventoryWant) check(t *testing.T, inv *inventory.Inventory) {
	t.Helper()
	for k, b := range inv.Blobs {
		if k > 0 && inv.Blobs[k-1].Digest.String() >= b.Digest.String() {
			t.Errorf("blobs not sorted at %d: %s after %s", k, b.Digest, inv.Blobs[k-1].Digest)
		}
		want, ok := w[b.Digest]
		if !ok {
			t.Errorf("inventory lists %s (%s), which no image references", b.Digest, b.Kind)
			continue
		}
		if wantRepos := slices.Sorted(maps.Keys(want.repos)); b.Kind != want.kind || b.Size != want.size || !slices.Equal(b.Repositories, wantRepos) {
			t.Errorf("blob %s = %s, %d bytes, in %v; want %s, %d bytes, in %v", b.Digest, b.Kind, b.Size, b.Repositories, want.kind, want.size, wantRepos)
		}
		if b.MediaType == "" {
			t.Errorf("blob %s has no media type", b.Digest)
		}
	}
	for h, b := range w {
		if _, ok := inv.Blob(h); !ok {
			t.Errorf("inventory lacks %s (%s in %v)", h, b.kind, slices.Sorted(maps.Keys(b.repos)))
		}
	}
}

// inventoryFixture is what a registry holds: three repositories, team/app
// (a Docker multi-platform v1 and v2, v2 also tagged latest), team/tool (an
// OCI single-platform image) and other/base (a Docker single-platform image
// sharing its layers and config with team/tool).
type inventoryFixture struct {
	// by repository
	images map[string][]sandbox.Artifact
	tags   map[string][]string
}

// newInventoryFixture pushes the fixture into reg.
func newInventoryFixture(t *testing.T, reg *testRegistry, opts ...remote.Option) *inventoryFixture {
	t.Helper()
	return pushInventoryFixture(t, func(repoTag string, art sandbox.Artifact) {
		if err := reg.Write(context.Background(), reg.ref(repoTag), art, opts...); err != nil {
			t.Fatal(err)
		}
	})
}

// pushInventoryFixture pushes the fixture with write, given "repo:tag".
func pushInventoryFixture(t *testing.T, write func(repoTag string, art sandbox.Artifact)) *inventoryFixture {
	t.Helper()
	app := newAppPair(t, docker, "linux/amd64", "linux/arm64/v8")
	tool := newAppPair(t, oci, "linux/amd64")
	base := newAppPair(t, docker, "linux/amd64")
	f := &inventoryFixture{images: map[string][]sandbox.Artifact{}, tags: map[string][]string{}}
	for _, w := range []struct {
		repo, tag string
		art       sandbox.Artifact
	}{
		{"team/app", "v1", app.V1}, {"team/app", "v2", app.V2}, {"team/app", "latest", app.V2},
		{"team/tool", "1.0", tool.V1},
		{"other/base", "v1", base.V1},
	} {
		write(w.repo+":"+w.tag, w.art)
		f.images[w.repo] = append(f.images[w.repo], w.art)
		f.tags[w.repo] = append(f.tags[w.repo], w.tag)
	}
	return f
}

// want is the expected inventory of the given repositories.
func (f *inventoryFixture) want(t testing.TB, repos ...string) (inventoryWant, []inventory.Repository) {
	w := inventoryWant{}
	var rs []inventory.Repository
	for _, r := range slices.Sorted(slices.Values(repos)) {
		for _, art := range f.images[r] {
			w.add(t, r, art)
		}
		rs = append(rs, inventory.Repository{Name: r, Tags: slices.Sorted(slices.Values(f.tags[r]))})
	}
	return w, rs
}

func TestInventory(t *testing.T) {
	t.Parallel()
	reg := newTestRegistry(t, nil)
	f := newInventoryFixture(t, reg)
	tests := []struct {
		name       string
		target     string
		repos      []string
		wantPrefix string
		want       []string
	}{
		{"named repositories", reg.Host, []string{"team/tool", "team/app"}, "", []string{"team/app", "team/tool"}},
		{"one repository, named twice", reg.Host, []string{"other/base", "/other/base/"}, "", []string{"other/base"}},
		{"catalog", reg.Host, nil, "", []string{"other/base", "team/app", "team/tool"}},
		{"catalog under a prefix", reg.Host + "/team", nil, "team", []string{"team/app", "team/tool"}},
		{"catalog under a prefix with a slash", reg.Host + "/team/", nil, "team", []string{"team/app", "team/tool"}},
		{"named under a prefix", reg.Host + "/team", []string{"app"}, "team", []string{"team/app"}},
		{"catalog under a prefix nothing has", reg.Host + "/nothing", nil, "nothing", nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			inv, err := imo.New(imo.WithPlainHTTP()).Inventory(context.Background(), tc.target, tc.repos...)
			if err != nil {
				t.Fatalf("Inventory(%s, %v) = %v", tc.target, tc.repos, err)
			}
			want, wantRepos := f.want(t, tc.want...)
			if inv.Version != inventory.Version || inv.Registry != reg.Host || inv.Prefix != tc.wantPrefix {
				t.Errorf("Inventory() = version %d, registry %q, prefix %q; want %d, %q, %q", inv.Version, inv.Registry, inv.Prefix, inventory.Version, reg.Host, tc.wantPrefix)
			}
			if inv.Taken.Location() != time.UTC || time.Since(inv.Taken) > time.Minute || inv.Took < 0 {
				t.Errorf("Inventory() taken %v, took %v: want now, in UTC, and a positive duration", inv.Taken, inv.Took)
			}
			if !slices.EqualFunc(inv.Repositories, wantRepos, func(a, b inventory.Repository) bool {
				return a.Name == b.Name && slices.Equal(a.Tags, b.Tags)
			}) {
				t.Errorf("Inventory().Repositories = %v, want %v", inv.Repositories, wantRepos)
			}
			want.check(t, inv)
		})
	}
}

func TestInventoryDeterministic(t *testing.T) {
	t.Parallel()
	reg := newTestRegistry(t, nil)
	newInventoryFixture(t, reg)
	var out [2][]byte
	for k := range out {
		inv, err := imo.New(imo.WithPlainHTTP(), imo.WithJobs(8)).Inventory(context.Background(), reg.Host)
		if err != nil {
			t.Fatal(err)
		}
		inv.Taken, inv.Took = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC), time.Second
		var b bytes.Buffer
		if err := inv.Write(&b); err != nil {
			t.Fatal(err)
		}
		out[k] = b.Bytes()
	}
	if !bytes.Equal(out[0], out[1]) {
		t.Errorf("two inventories of the same registry differ:\n%s\n%s", out[0], out[1])
	}
	// One blob per line: a line per blob and per repository, and 10 more.
	inv, err := inventory.Read(bytes.NewReader(out[0]))
	if err != nil {
		t.Fatal(err)
	}
	if lines := bytes.Count(out[0], []byte("\n")); lines != len(inv.Blobs)+len(inv.Repositories)+10 {
		t.Errorf("Write() gave %d lines for %d blobs and %d repositories:\n%s", lines, len(inv.Blobs), len(inv.Repositories), out[0])
	}
}

func TestInventoryErrors(t *testing.T) {
	t.Parallel()
	reg := newTestRegistry(t, nil)
	newInventoryFixture(t, reg)
	refuse := func(status int) func(http.Handler) http.Handler {
		return func(h http.Handler) http.Handler {
			return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path == "/v2/_catalog" {
					http.Error(w, `{"errors":[{"code":"UNSUPPORTED","message":"no catalog here"}]}`, status)
					return
				}
				h.ServeHTTP(w, r)
			})
		}
	}
	noCatalog := newTestRegistry(t, refuse(http.StatusNotFound))
	deniedCatalog := newTestRegistry(t, refuse(http.StatusForbidden))
	tests := []struct {
		name   string
		opts   []imo.Option
		target string
		repos  []string
		want   []string // in the error
	}{
		{"missing repository", nil, reg.Host, []string{"team/app", "nope/nothing"}, []string{"nope/nothing", "does not exist"}},
		{"missing repository under a prefix", nil, reg.Host + "/team", []string{"gone"}, []string{"team/gone", "does not exist"}},
		{"no catalog", nil, noCatalog.Host, nil, []string{noCatalog.Host, "name the repositories"}},
		{"catalog denied", nil, deniedCatalog.Host, nil, []string{deniedCatalog.Host, "name the repositories"}},
		{"bad repository", nil, reg.Host, []string{"Team/App"}, []string{"Team/App", "not a repository path"}},
		{"empty repository", nil, reg.Host, []string{"/"}, []string{"not a repository path"}},
		{"bad prefix", nil, reg.Host + "/Mirror", nil, []string{"Mirror", "not a repository path"}},
		{"no host", nil, "/team", nil, []string{"want host[:port]"}},
		{"a URL", nil, "https://" + reg.Host, nil, []string{"want host[:port]"}},
		{"a tag, not a target", nil, reg.Host + "/team/app:v1", nil, []string{"not a repository path"}},
		{"HTTPS to a plain registry", nil, reg.Host, []string{"team/app"}, []string{reg.Host}},
		{"invalid option", []imo.Option{imo.WithJobs(0)}, reg.Host, nil, []string{"WithJobs"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			opts := tc.opts
			if tc.name != "HTTPS to a plain registry" {
				opts = append(opts, imo.WithPlainHTTP())
			}
			inv, err := imo.New(append(opts, imo.WithRetries(0, 0))...).Inventory(context.Background(), tc.target, tc.repos...)
			if err == nil {
				t.Fatalf("Inventory(%s, %v) = %d blobs, want an error", tc.target, tc.repos, len(inv.Blobs))
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Inventory(%s, %v) = %v, want %q in it", tc.target, tc.repos, err, w)
				}
			}
		})
	}
}

// paginated wraps a registry handler so that the catalog and tag lists
// come one name per page, the next page named by a relative Link header,
// as the distribution registry pages them.
func paginated(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		key := ""
		switch {
		case r.URL.Path == "/v2/_catalog":
			key = "repositories"
		case strings.HasSuffix(r.URL.Path, "/tags/list"):
			key = "tags"
		}
		if key == "" || r.Method != http.MethodGet {
			h.ServeHTTP(w, r)
			return
		}
		last := r.URL.Query().Get("last")
		inner := httptest.NewRecorder()
		all := r.Clone(r.Context())
		all.URL.RawQuery = ""
		h.ServeHTTP(inner, all)
		var page map[string]any
		var names []string
		if inner.Code != http.StatusOK || json.Unmarshal(inner.Body.Bytes(), &page) != nil {
			w.WriteHeader(inner.Code)
			w.Write(inner.Body.Bytes())
			return
		}
		b, _ := json.Marshal(page[key])
		json.Unmarshal(b, &names)
		slices.Sort(names)
		var rest []string
		for _, n := range names {
			if n > last {
				rest = append(rest, n)
			}
		}
		if len(rest) > 1 {
			w.Header().Set("Link", fmt.Sprintf(`<%s?last=%s&n=1>; rel="next"`, r.URL.Path, url.QueryEscape(rest[0])))
			rest = rest[:1]
		}
		page[key] = rest
		json.NewEncoder(w).Encode(page)
	})
}

// TestInventoryPaginated follows Link headers through the catalog and the
// tag lists, over HTTPS on a loopback address, where go-containerregistry's
// own paging would refuse the next page's scheme.
func TestInventoryPaginated(t *testing.T) {
	t.Parallel()
	ca, err := sandbox.NewCA()
	if err != nil {
		t.Fatal(err)
	}
	cert, err := ca.Issue(x509.ExtKeyUsageServerAuth)
	if err != nil {
		t.Fatal(err)
	}
	reg := newTLSRegistry(t, paginated, &tls.Config{Certificates: []tls.Certificate{cert}})
	f := newInventoryFixture(t, reg, remote.WithTransport(&http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.Pool()}}))
	inv, err := imo.New(imo.WithCABundle(ca.PEM)).Inventory(context.Background(), reg.Host)
	if err != nil {
		t.Fatalf("Inventory() = %v", err)
	}
	want, wantRepos := f.want(t, "other/base", "team/app", "team/tool")
	if got := len(inv.Repositories); got != 3 || !slices.Equal(inv.Repositories[1].Tags, wantRepos[1].Tags) {
		t.Errorf("Inventory().Repositories = %v, want %v", inv.Repositories, wantRepos)
	}
	want.check(t, inv)
	if n := reg.count(http.MethodGet, "/v2/_catalog"); n != 3 {
		t.Errorf("Inventory() asked for %d catalog pages, want 3", n)
	}
}

// TestInventoryTokenAuth takes an inventory of a registry with a token
// service, the catalog included.
func TestInventoryTokenAuth(t *testing.T) {
	t.Parallel()
	reg := newTestRegistry(t, sandbox.TokenAuth("alice", "s3cret-pw"))
	f := newInventoryFixture(t, reg, remote.WithAuth(&authn.Basic{Username: "alice", Password: "s3cret-pw"}))
	inv, err := imo.New(imo.WithPlainHTTP(), imo.WithPushAuth("alice", "s3cret-pw")).Inventory(context.Background(), reg.Host)
	if err != nil {
		t.Fatalf("Inventory() = %v", err)
	}
	want, _ := f.want(t, "other/base", "team/app", "team/tool")
	want.check(t, inv)
	if _, err := imo.New(imo.WithPlainHTTP(), imo.WithPushAuth("alice", "wrong")).Inventory(context.Background(), reg.Host); err == nil {
		t.Error("Inventory() with a wrong password succeeded")
	}
}

// countingTransport counts the requests in flight, from RoundTrip to the
// body's Close, and remembers the most.
type countingTransport struct {
	next          http.RoundTripper
	inFlight, max atomic.Int64
	total         atomic.Int64
}

func (c *countingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	n := c.inFlight.Add(1)
	c.total.Add(1)
	for m := c.max.Load(); n > m && !c.max.CompareAndSwap(m, n); m = c.max.Load() {
	}
	resp, err := c.next.RoundTrip(r)
	if err != nil {
		c.inFlight.Add(-1)
		return nil, err
	}
	resp.Body = &countedBody{ReadCloser: resp.Body, done: func() { c.inFlight.Add(-1) }}
	return resp, nil
}

type countedBody struct {
	io.ReadCloser
	once sync.Once
	done func()
}

func (b *countedBody) Close() error {
	b.once.Do(b.done)
	return b.ReadCloser.Close()
}

func TestInventoryJobs(t *testing.T) {
	t.Parallel()
	reg := newTestRegistry(t, func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			time.Sleep(2 * time.Millisecond) // let requests overlap
			h.ServeHTTP(w, r)
		})
	})
	newInventoryFixture(t, reg)
	for _, jobs := range []int{1, 3} {
		t.Run(fmt.Sprint(jobs), func(t *testing.T) {
			ct := &countingTransport{next: http.DefaultTransport}
			reg.resetCounts()
			if _, err := imo.New(imo.WithPlainHTTP(), imo.WithTransport(ct), imo.WithJobs(jobs)).Inventory(context.Background(), reg.Host); err != nil {
				t.Fatal(err)
			}
			if got := ct.max.Load(); got > int64(jobs) {
				t.Errorf("Inventory() with WithJobs(%d) made %d requests at once", jobs, got)
			}
			// team/app: v1 and v2 are indexes of two platforms each; latest is
			// v2 again. Each manifest is fetched once per repository.
			if n := reg.count(http.MethodGet, "/v2/team/app/manifests/sha256:"); n != 4 {
				t.Errorf("Inventory() fetched %d child manifests of team/app, want 4", n)
			}
			if n := reg.count(http.MethodGet, "/blobs/"); n != 0 {
				t.Errorf("Inventory() downloaded %d blobs, want none", n)
			}
		})
	}
}

// TestInventoryCancel cancels an inventory stuck on a registry and checks
// that it returns context.Canceled and leaves no goroutine behind.
func TestInventoryCancel(t *testing.T) {
	stalled := make(chan struct{})
	var once sync.Once
	var armed atomic.Bool
	reg := newTestRegistry(t, func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if armed.Load() && r.Method == http.MethodGet && strings.Contains(r.URL.Path, "/team/app/manifests/sha256:") {
				once.Do(func() { close(stalled) })
				<-r.Context().Done()
				return
			}
			h.ServeHTTP(w, r)
		})
	})
	newInventoryFixture(t, reg)
	armed.Store(true)
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	errc := make(chan error, 1)
	go func() {
		_, err := imo.New(imo.WithPlainHTTP()).Inventory(ctx, reg.Host)
		errc <- err
	}()
	select {
	case <-stalled:
	case err := <-errc:
		t.Fatalf("Inventory() ended before stalling: %v", err)
	}
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Errorf("Inventory() after cancel = %v, want context.Canceled", err)
	}
}

// TestInventoryFile writes an inventory to a file and loads it back.
func TestInventoryFile(t *testing.T) {
	t.Parallel()
	reg := newTestRegistry(t, nil)
	f := newInventoryFixture(t, reg)
	inv, err := imo.New(imo.WithPlainHTTP()).Inventory(context.Background(), reg.Host+"/team")
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	if err := inv.Write(&b); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "have.json")
	if err := os.WriteFile(path, b.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	loaded, err := inventory.Load(path)
	if err != nil {
		t.Fatalf("LoadInventory() = %v", err)
	}
	if !loaded.Taken.Equal(inv.Taken) || loaded.Took != inv.Took || loaded.Prefix != "team" {
		t.Errorf("LoadInventory() = taken %v, took %v, prefix %q; want %v, %v, team", loaded.Taken, loaded.Took, loaded.Prefix, inv.Taken, inv.Took)
	}
	want, _ := f.want(t, "team/app", "team/tool")
	want.check(t, loaded)
	app := f.images["team/app"][0]
	if got, ok := loaded.Blob(digest(t, app)); !ok || got.Kind != inventory.KindManifest || got.MediaType != docker.Index {
		t.Errorf("Blob(team/app:v1) = %+v, %v; want a %s manifest", got, ok, docker.Index)
	}
	if _, err := inventory.Load(filepath.Join(t.TempDir(), "nope.json")); err == nil {
		t.Error("LoadInventory(a missing file) succeeded")
	}
}

// sampleInventory is a small valid inventory.
// Take an inventory of the far side's registry, for the next pull to leave
// out what it holds.
func ExampleIncremental_Inventory() {
	_, dst, stop := exampleRegistries()
	defer stop()
	inv, err := imo.New(imo.WithPlainHTTP()).Inventory(context.Background(), dst, "app")
	if err != nil {
		log.Fatal(err)
	}
	kinds := map[string]int{}
	for _, b := range inv.Blobs {
		kinds[b.Kind]++
	}
	for _, r := range inv.Repositories {
		fmt.Println(r.Name, r.Tags)
	}
	fmt.Printf("%d manifest, %d config, %d layers\n", kinds[inventory.KindManifest], kinds[inventory.KindConfig], kinds[inventory.KindLayer])
	// Write stores it for imo pull, one blob per line: inv.Write(file).
	// Output:
	// app [v1]
	// 1 manifest, 1 config, 2 layers
}

// TestInventoryOddManifests lists a Docker schema 1 manifest alone, and
// leaves out a non-distributable layer, which registries do not hold.
func TestInventoryOddManifests(t *testing.T) {
	t.Parallel()
	reg := newTestRegistry(t, nil)
	foreign, err := sandbox.Layer(types.DockerForeignLayer, "windows/base.txt", "a foreign layer")
	if err != nil {
		t.Fatal(err)
	}
	own, err := sandbox.Layer(types.DockerLayer, "app.txt", "an app")
	if err != nil {
		t.Fatal(err)
	}
	img, err := docker.Image(v1.Platform{OS: "windows", Architecture: "amd64"}, foreign, own)
	if err != nil {
		t.Fatal(err)
	}
	reg.write(t, reg.ref("win/app:v1"), img)

	schema1 := []byte(`{"schemaVersion":1,"name":"old/app","tag":"v1","architecture":"amd64","fsLayers":[],"history":[]}`)
	req, err := http.NewRequest(http.MethodPut, "http://"+reg.Host+"/v2/old/app/manifests/v1", bytes.NewReader(schema1))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", string(types.DockerManifestSchema1))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("putting a schema 1 manifest: %s", resp.Status)
	}

	var skipped []imo.Event
	var mu sync.Mutex
	inv, err := imo.New(imo.WithPlainHTTP(), imo.WithReporter(imo.ReporterFunc(func(e imo.Event) {
		mu.Lock()
		defer mu.Unlock()
		if e.Kind == imo.BlobSkipped {
			skipped = append(skipped, e)
		}
	}))).Inventory(context.Background(), reg.Host)
	if err != nil {
		t.Fatalf("Inventory() = %v", err)
	}
	want := inventoryWant{}
	want.add(t, "win/app", img)
	delete(want, digest(t, foreign))
	h, size, err := v1.SHA256(bytes.NewReader(schema1))
	if err != nil {
		t.Fatal(err)
	}
	want[h] = &wantBlob{size: size, kind: inventory.KindManifest, repos: map[string]bool{"old/app": true}}
	want.check(t, inv)
	if len(skipped) != 1 || skipped[0].Digest != h || !strings.Contains(skipped[0].Reason, "schema 1") {
		t.Errorf("Inventory() reported %v skipped, want the schema 1 manifest %s", skipped, h)
	}
}

func TestInventoryPageLoops(t *testing.T) {
	t.Parallel()
	// A registry whose tag list pages loop (A → B → A) is refused at the
	// first page seen twice.
	var pages atomic.Int64
	reg := newTestRegistry(t, func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Method == http.MethodGet && strings.HasSuffix(r.URL.Path, "/tags/list") {
				if n := pages.Add(1); n < 500 {
					next := "a"
					if r.URL.Query().Get("last") == "a" {
						next = "b"
					}
					w.Header().Set("Link", fmt.Sprintf(`<%s?last=%s&n=1>; rel="next"`, r.URL.Path, next))
				}
				json.NewEncoder(w).Encode(map[string]any{"name": "app", "tags": []string{"v1"}})
				return
			}
			h.ServeHTTP(w, r)
		})
	})
	pair := newAppPair(t, sandbox.OCI, "linux/amd64")
	reg.write(t, reg.ref("app:v1"), pair.V1)
	_, err := imo.New(imo.WithPlainHTTP()).Inventory(context.Background(), reg.Host, "app")
	if n := pages.Load(); n > 3 || err == nil {
		t.Errorf("Inventory() followed %d pages of a two-page loop and returned %v; want the loop refused", n, err)
	}
}

func TestInventoryRedirectElsewhere(t *testing.T) {
	t.Parallel()
	var hit atomic.Bool
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hit.Store(true)
		json.NewEncoder(w).Encode(map[string]any{"tags": []string{}})
	}))
	defer other.Close()
	reg := newTestRegistry(t, func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Method == http.MethodGet && strings.HasSuffix(r.URL.Path, "/tags/list") {
				http.Redirect(w, r, other.URL+"/internal/secret", http.StatusFound)
				return
			}
			h.ServeHTTP(w, r)
		})
	})
	pair := newAppPair(t, sandbox.OCI, "linux/amd64")
	reg.write(t, reg.ref("app:v1"), pair.V1)
	if _, err := imo.New(imo.WithPlainHTTP()).Inventory(context.Background(), reg.Host, "app"); err == nil || hit.Load() {
		t.Errorf("Inventory() = %v, followed a redirect to another host: %v", err, hit.Load())
	}
}
