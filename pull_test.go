package imo_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/validate"
	"github.com/imokit/imo"
	"github.com/imokit/imo/archive"
	"github.com/imokit/imo/internal/sandbox"
	"go.uber.org/goleak"
)

// setup is a source registry holding app:v1 and app:v2 of a pair.
func setup(t *testing.T, f sandbox.Format, platforms ...string) (*testRegistry, *sandbox.AppPair) {
	t.Helper()
	sites, err := sandbox.NewSites(context.Background(), sandbox.SitesOptions{Format: f, Platforms: platforms})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sites.Close)
	return &testRegistry{sites.Source}, sites.Pair
}

var cases = []struct {
	name      string
	format    sandbox.Format
	platforms []string
}{
	{"docker single-platform", docker, []string{"linux/amd64"}},
	{"oci single-platform", oci, []string{"linux/amd64"}},
	{"docker multi-platform", docker, []string{"linux/amd64", "linux/arm64/v8"}},
	{"oci multi-platform", oci, []string{"linux/amd64", "linux/arm64/v8"}},
}

func TestPullDelta(t *testing.T) {
	t.Parallel()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			src, pair := setup(t, tc.format, tc.platforms...)
			arc, err := pull(t, imo.New(imo.WithPlainHTTP()), src.ref("app:v1"), src.ref("app:v2"))
			if err != nil {
				t.Fatalf("Pull() = %v", err)
			}
			names := tarNames(t, arc)
			for _, h := range pair.Shared {
				if hasBlob(names, h) {
					t.Errorf("archive carries shared layer %s", h)
				}
				if n := src.count(http.MethodGet, "/blobs/"+h.String()); n != 0 {
					t.Errorf("shared layer %s was downloaded %d times, want 0", h, n)
				}
			}
			for _, h := range pair.Changed {
				if !hasBlob(names, h) {
					t.Errorf("archive lacks changed layer %s", h)
				}
			}
			if want := []string{archive.LayoutFile, archive.PlanFile, archive.IndexFile}; !slices.Equal(names[:3], want) {
				t.Errorf("archive starts with %v, want %v", names[:3], want)
			}
			if slices.Contains(names, archive.DockerManifestFile) {
				t.Errorf("a delta archive carries %s", archive.DockerManifestFile)
			}
			img := readLayout(t, arc)
			if want := digest(t, pair.V2); img != want {
				t.Errorf("archive's image is %s, want %s", img, want)
			}
		})
	}
}

func TestPullScratch(t *testing.T) {
	t.Parallel()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			src, pair := setup(t, tc.format, tc.platforms...)
			arc, err := pull(t, imo.New(imo.WithPlainHTTP()), imo.Scratch, src.ref("app:v2"))
			if err != nil {
				t.Fatalf("Pull() = %v", err)
			}
			names := tarNames(t, arc)
			for _, h := range append(pair.Shared, pair.Changed...) {
				if !hasBlob(names, h) {
					t.Errorf("whole-image archive lacks %s", h)
				}
			}
			if got, want := slices.Contains(names, archive.DockerManifestFile), len(tc.platforms) == 1; got != want {
				t.Errorf("archive carries %s: %v, want %v", archive.DockerManifestFile, got, want)
			}
			path := t.TempDir()
			if err := extract(arc, path); err != nil {
				t.Fatal(err)
			}
			lp, err := layout.FromPath(path)
			if err != nil {
				t.Fatal(err)
			}
			idx, err := lp.ImageIndex()
			if err != nil {
				t.Fatal(err)
			}
			if err := validate.Index(idx); err != nil {
				t.Errorf("validate.Index(archive) = %v", err)
			}
		})
	}
}

// TestNeededByOnce checks that a layer an image uses twice names the image
// once among those that need it.
func TestNeededByOnce(t *testing.T) {
	t.Parallel()
	src := newTestRegistry(t, nil)
	layer, err := sandbox.Layer(docker.Layer, "etc/twice", "the same layer, twice")
	if err != nil {
		t.Fatal(err)
	}
	img, err := docker.Image(v1.Platform{OS: "linux", Architecture: "amd64"}, layer, layer)
	if err != nil {
		t.Fatal(err)
	}
	src.write(t, src.ref("twice:v1"), img)
	plan, err := planOf(context.Background(), imo.New(imo.WithPlainHTTP()), imo.Scratch, src.ref("twice:v1"))
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range plan.Blobs {
		if len(b.NeededBy) != 1 {
			t.Errorf("blob %s is needed by %v, want the one manifest once", b.Digest, b.NeededBy)
		}
	}
}

func TestPullPlan(t *testing.T) {
	t.Parallel()
	src, pair := setup(t, docker, "linux/amd64", "linux/arm64/v8")
	inc := imo.New(imo.WithPlainHTTP())
	plan, err := planOf(context.Background(), inc, src.ref("app:v1"), src.ref("app:v2"))
	if err != nil {
		t.Fatalf("Plan() = %v", err)
	}
	if n := src.count(http.MethodGet, "/blobs/"); n != 0 {
		t.Errorf("Plan downloaded %d blobs, want 0", n)
	}
	img := plan.Images[0]
	if img.Final.Digest != digest(t, pair.V2) || img.Base.Digest != digest(t, pair.V1) {
		t.Errorf("Plan() images = %+v", img)
	}
	if want := []string{"linux/amd64", "linux/arm64/v8"}; !slices.Equal(img.Platforms, want) {
		t.Errorf("Plan() platforms = %v, want %v", img.Platforms, want)
	}
	for _, b := range plan.Blobs {
		shared := slices.Contains(pair.Shared, b.Digest)
		if b.Included == shared {
			t.Errorf("blob %s included = %v, but shared with base = %v", b.Digest, b.Included, shared)
		}
	}
	carried, whole := plan.Bytes()
	if carried <= 0 || carried >= whole {
		t.Errorf("Plan().Bytes() = %d, %d; want 0 < carried < whole", carried, whole)
	}
	// The archive's own copy of the plan is the same.
	arc, err := pull(t, inc, src.ref("app:v1"), src.ref("app:v2"))
	if err != nil {
		t.Fatal(err)
	}
	var inArchive archive.Plan
	if err := json.Unmarshal(entry(t, arc, archive.PlanFile), &inArchive); err != nil {
		t.Fatal(err)
	}
	got, _ := json.Marshal(inArchive)
	want, _ := json.Marshal(plan)
	if !bytes.Equal(got, want) {
		t.Errorf("archive's %s = %s, want %s", archive.PlanFile, got, want)
	}
}

func TestPullDeterministic(t *testing.T) {
	t.Parallel()
	src, _ := setup(t, oci, "linux/amd64", "linux/arm64/v8")
	first, err := pull(t, imo.New(imo.WithPlainHTTP()), src.ref("app:v1"), src.ref("app:v2"))
	if err != nil {
		t.Fatal(err)
	}
	var events atomic.Int64
	reporting := imo.New(imo.WithPlainHTTP(), imo.WithJobs(1), imo.WithReporter(imo.ReporterFunc(func(imo.Event) { events.Add(1) })))
	second, err := pull(t, reporting, src.ref("app:v1"), src.ref("app:v2"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(first, second) {
		t.Error("two pulls of the same images differ")
	}
	if events.Load() == 0 {
		t.Error("the reporter saw no event")
	}
}

func TestPullPlatforms(t *testing.T) {
	t.Parallel()
	src, _ := setup(t, docker, "linux/amd64", "linux/arm64/v8", "linux/s390x")
	v2, err := remote.Index(mustRef(t, src.ref("app:v2")))
	if err != nil {
		t.Fatal(err)
	}
	im, err := v2.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	child := map[string]v1.Hash{}
	for _, d := range im.Manifests {
		child[d.Platform.String()] = d.Digest
	}
	tests := []struct {
		name      string
		platforms []string
		want      v1.Hash // zero: a new index of len(platforms) children
		wantErr   error
	}{
		{"one platform", []string{"linux/arm64"}, child["linux/arm64/v8"], nil},
		{"variant", []string{"linux/arm64/v8"}, child["linux/arm64/v8"], nil},
		{"two platforms", []string{"linux/amd64", "linux/s390x"}, v1.Hash{}, nil},
		{"no match", []string{"windows/amd64"}, v1.Hash{}, imo.ErrNoMatchingPlatform},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var ps []v1.Platform
			for _, s := range tc.platforms {
				p, err := v1.ParsePlatform(s)
				if err != nil {
					t.Fatal(err)
				}
				ps = append(ps, *p)
			}
			plan, err := planOf(context.Background(), imo.New(imo.WithPlainHTTP(), imo.WithPlatforms(ps...)), imo.Scratch, src.ref("app:v2"))
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("Plan() = %v, want %v", err, tc.wantErr)
			}
			if err != nil {
				var pe *imo.PlatformError
				if !errors.As(err, &pe) || !slices.Contains(pe.Available, "linux/s390x") {
					t.Errorf("Plan() = %v, want a *PlatformError listing the platforms", err)
				}
				return
			}
			got := plan.Images[0]
			switch {
			case tc.want != v1.Hash{} && got.Final.Digest != tc.want:
				t.Errorf("Plan() final = %s, want the child %s", got.Final.Digest, tc.want)
			case tc.want == v1.Hash{} && len(got.Platforms) != len(tc.platforms):
				t.Errorf("Plan() platforms = %v, want %v", got.Platforms, tc.platforms)
			}
		})
	}
}

func TestPullSinglePlatformImageChecked(t *testing.T) {
	t.Parallel()
	src, _ := setup(t, oci, "linux/amd64")
	_, err := planOf(context.Background(), imo.New(imo.WithPlainHTTP(), imo.WithPlatforms(v1.Platform{OS: "linux", Architecture: "arm64"})), imo.Scratch, src.ref("app:v2"))
	if !errors.Is(err, imo.ErrNoMatchingPlatform) || !strings.Contains(err.Error(), "linux/amd64") {
		t.Errorf("Plan() = %v, want ErrNoMatchingPlatform naming linux/amd64", err)
	}
}

func TestPullCorruptBlob(t *testing.T) {
	t.Parallel()
	src, pair := setup(t, docker, "linux/amd64")
	src.Corrupt(pair.Changed[0])
	_, err := pull(t, imo.New(imo.WithPlainHTTP()), src.ref("app:v1"), src.ref("app:v2"))
	var de *imo.DigestMismatchError
	if !errors.Is(err, imo.ErrDigestMismatch) || !errors.As(err, &de) || de.Want != pair.Changed[0] {
		t.Errorf("Pull() = %v, want a DigestMismatchError for %s", err, pair.Changed[0])
	}
}

func TestPullCorruptManifest(t *testing.T) {
	t.Parallel()
	pair := newAppPair(t, oci, "linux/amd64", "linux/arm64")
	src := newTestRegistry(t, func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Method != http.MethodGet || !strings.Contains(r.URL.Path, "/manifests/sha256:") {
				h.ServeHTTP(w, r)
				return
			}
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, r)
			b := bytes.Replace(rec.Body.Bytes(), []byte(`"schemaVersion":2`), []byte(`"schemaVersion":3`), 1)
			maps.Copy(w.Header(), rec.Header())
			w.WriteHeader(rec.Code)
			w.Write(b)
		})
	})
	src.write(t, src.ref("app:v2"), pair.V2)
	_, err := pull(t, imo.New(imo.WithPlainHTTP()), imo.Scratch, src.ref("app:v2"))
	var de *imo.DigestMismatchError
	if !errors.As(err, &de) || !strings.Contains(de.Source, src.Host) {
		t.Errorf("Pull() of an index with an altered child = %v, want a *DigestMismatchError naming %s", err, src.Host)
	}
}

func TestPullErrors(t *testing.T) {
	t.Parallel()
	src, _ := setup(t, docker, "linux/amd64")
	tests := []struct {
		name, base, final, want string
	}{
		{"bad final", imo.Scratch, "Not A Reference!", "final image"},
		{"bad base", "::", src.ref("app:v2"), "base image"},
		{"missing final", imo.Scratch, src.ref("app:v9"), "app:v9"},
		{"missing base", src.ref("nope:v1"), src.ref("app:v2"), "nope"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rc, err := imo.New(imo.WithPlainHTTP()).Pull(context.Background(), tc.base, tc.final)
			if err == nil {
				rc.Close()
				t.Fatal("Pull() = nil error")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Pull() = %v, want it to mention %q", err, tc.want)
			}
		})
	}
}

// TestPullCancel cancels a pull mid-blob and checks that Read reports it
// and that no goroutine outlives Close.
func TestPullCancel(t *testing.T) {
	pair := newAppPair(t, docker, "linux/amd64")
	stall := make(chan struct{})
	slow := newTestRegistry(t, func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Method == http.MethodGet && strings.Contains(r.URL.Path, pair.Changed[0].String()) {
				w.Header().Set("Content-Length", "100000")
				w.Write(make([]byte, 10))
				w.(http.Flusher).Flush()
				close(stall)
				<-r.Context().Done()
				return
			}
			h.ServeHTTP(w, r)
		})
	})
	slow.write(t, slow.ref("app:v2"), pair.V2)
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	rc, err := imo.New(imo.WithPlainHTTP()).Pull(ctx, imo.Scratch, slow.ref("app:v2"))
	if err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() {
		_, err := io.Copy(io.Discard, rc)
		errc <- err
	}()
	select {
	case <-stall:
	case err := <-errc:
		t.Fatalf("Pull ended before the stalled blob: %v", err)
	}
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Errorf("Read after cancel = %v, want context.Canceled", err)
	}
	if err := rc.Close(); err != nil {
		t.Errorf("Close() = %v", err)
	}
}

func mustRef(t testing.TB, s string) name.Reference {
	t.Helper()
	ref, err := name.ParseReference(s, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	return ref
}

// TestPullToFile checks that the parallel file writer produces the same
// bytes as the stream, for any number of jobs.
func TestPullToFile(t *testing.T) {
	t.Parallel()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			src, _ := setup(t, tc.format, tc.platforms...)
			for _, base := range []string{imo.Scratch, src.ref("app:v1")} {
				want, err := pull(t, imo.New(imo.WithPlainHTTP()), base, src.ref("app:v2"))
				if err != nil {
					t.Fatal(err)
				}
				for _, jobs := range []int{1, 3, 8} {
					path := filepath.Join(t.TempDir(), "out.tar")
					if _, err := pullToFile(context.Background(), imo.New(imo.WithPlainHTTP(), imo.WithJobs(jobs)), base, src.ref("app:v2"), path); err != nil {
						t.Fatalf("PullToFile(jobs %d) = %v", jobs, err)
					}
					got, err := os.ReadFile(path)
					if err != nil {
						t.Fatal(err)
					}
					if !bytes.Equal(got, want) {
						t.Errorf("PullToFile(jobs %d) differs from Pull", jobs)
					}
				}
			}
		})
	}
}

func TestPullToFileFailure(t *testing.T) {
	t.Parallel()
	src, pair := setup(t, docker, "linux/amd64")
	src.Corrupt(pair.Changed[0])
	dir := t.TempDir()
	path := filepath.Join(dir, "out.tar")
	if err := os.WriteFile(path, []byte("previous"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := pullToFile(context.Background(), imo.New(imo.WithPlainHTTP()), imo.Scratch, src.ref("app:v2"), path)
	if !errors.Is(err, imo.ErrDigestMismatch) {
		t.Errorf("PullToFile() = %v, want ErrDigestMismatch", err)
	}
	// Whether out.tar.partial stays depends on whether another blob wrote a
	// byte before the corrupt one failed; nothing else may be there.
	entries, _ := os.ReadDir(dir)
	partial := len(entries) == 2 && entries[1].Name() == "out.tar.partial"
	if b, _ := os.ReadFile(path); len(entries) != 1 && !partial || string(b) != "previous" {
		t.Errorf("a failed PullToFile left %v and changed the existing one to %q; want it unchanged, and at most out.tar.partial beside it", entries, b)
	}
}
