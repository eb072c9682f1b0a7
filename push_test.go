package imo_test

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/imokit/imo"
	"go.uber.org/goleak"
)

// manifests returns the raw bytes of every manifest under ref, the top one
// first, so that two registries can be compared byte for byte.
func manifests(t *testing.T, ref string) [][]byte {
	t.Helper()
	d, err := remote.Get(mustRef(t, ref))
	if err != nil {
		t.Fatalf("remote.Get(%s) = %v", ref, err)
	}
	out := [][]byte{d.Manifest}
	if d.MediaType.IsIndex() {
		im, err := v1.ParseIndexManifest(bytes.NewReader(d.Manifest))
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range im.Manifests {
			out = append(out, manifests(t, ref[:strings.LastIndex(ref, ":")]+"@"+c.Digest.String())...)
		}
	}
	return out
}

func TestPushDelta(t *testing.T) {
	t.Parallel()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			src, pair := setup(t, tc.format, tc.platforms...)
			dst := newTestRegistry(t, nil)
			dst.write(t, dst.ref("app:v1"), pair.V1)
			dst.resetCounts()

			inc := imo.New(imo.WithPlainHTTP())
			arc := pullFile(t, inc, src.ref("app:v1"), src.ref("app:v2"))
			if err := inc.PushVet(context.Background(), arc, dst.ref("app:v2")); err != nil {
				t.Fatalf("PushVet() = %v", err)
			}
			if err := inc.Push(context.Background(), arc, dst.ref("app:v2")); err != nil {
				t.Fatalf("Push() = %v", err)
			}
			if got, want := manifests(t, dst.ref("app:v2")), manifests(t, src.ref("app:v2")); !slices.EqualFunc(got, want, bytes.Equal) {
				t.Error("pushed manifests differ from the source's")
			}
			for _, h := range pair.Shared {
				if n := dst.count(http.MethodPut, "digest="+h.String()); n != 0 {
					t.Errorf("shared layer %s was uploaded %d times, want 0", h, n)
				}
			}
			// One upload per changed layer and per platform config, nothing else.
			if got, want := dst.count(http.MethodPost, "/blobs/uploads/"), len(pair.Changed)*2; got != want {
				t.Errorf("Push() started %d uploads, want %d", got, want)
			}
		})
	}
}

func TestPushScratchIntoEmptyRegistry(t *testing.T) {
	t.Parallel()
	src, _ := setup(t, oci, "linux/amd64", "linux/arm64/v8")
	dst := newTestRegistry(t, nil)
	inc := imo.New(imo.WithPlainHTTP())
	arc := pullFile(t, inc, imo.Scratch, src.ref("app:v2"))
	if err := inc.Push(context.Background(), arc, dst.ref("team/app:v2")); err != nil {
		t.Fatalf("Push() = %v", err)
	}
	if got, want := manifests(t, dst.ref("team/app:v2")), manifests(t, src.ref("app:v2")); !slices.EqualFunc(got, want, bytes.Equal) {
		t.Error("pushed manifests differ from the source's")
	}
	// Pushing again uploads nothing.
	dst.resetCounts()
	if err := inc.Push(context.Background(), arc, dst.ref("team/app:v2")); err != nil {
		t.Fatalf("second Push() = %v", err)
	}
	if n := dst.count(http.MethodPost, "/blobs/uploads/"); n != 0 {
		t.Errorf("second Push() started %d uploads, want 0", n)
	}
}

func TestPushRefusesMissingBlobs(t *testing.T) {
	t.Parallel()
	src, pair := setup(t, docker, "linux/amd64", "linux/arm64/v8")
	dst := newTestRegistry(t, nil)
	// The base is in another repository: blobs are per repository.
	dst.write(t, dst.ref("other:v1"), pair.V1)
	dst.resetCounts()

	inc := imo.New(imo.WithPlainHTTP())
	arc := pullFile(t, inc, src.ref("app:v1"), src.ref("app:v2"))
	for _, op := range []struct {
		name string
		run  func(context.Context, string, string) error
	}{{"PushVet", inc.PushVet}, {"Push", inc.Push}} {
		err := op.run(context.Background(), arc, dst.ref("app:v2"))
		var me *imo.MissingBlobsError
		if !errors.Is(err, imo.ErrMissingBlobs) || !errors.As(err, &me) {
			t.Fatalf("%s() = %v, want a *MissingBlobsError", op.name, err)
		}
		var got []v1.Hash
		for _, b := range me.Blobs {
			got = append(got, b.Digest)
			if len(b.NeededBy) == 0 || b.Size == 0 || b.MediaType == "" {
				t.Errorf("%s() missing blob %+v lacks details", op.name, b)
			}
		}
		slices.SortFunc(got, compareHash)
		want := slices.SortedFunc(slices.Values(pair.Shared), compareHash)
		if !slices.Equal(got, want) {
			t.Errorf("%s() missing = %v, want %v", op.name, got, want)
		}
	}
	if n := dst.count(http.MethodPost, "") + dst.count(http.MethodPut, "") + dst.count(http.MethodPatch, ""); n != 0 {
		t.Errorf("refused pushes wrote %d times to the destination, want 0", n)
	}
}

func TestPushRefusesCorruptArchive(t *testing.T) {
	t.Parallel()
	src, pair := setup(t, docker, "linux/amd64")
	dst := newTestRegistry(t, nil)
	dst.write(t, dst.ref("app:v1"), pair.V1)
	inc := imo.New(imo.WithPlainHTTP())
	path := pullFile(t, inc, src.ref("app:v1"), src.ref("app:v2"))
	flipByte(t, path, "blobs/sha256/"+pair.Changed[0].Hex)
	dst.resetCounts()
	err := inc.Push(context.Background(), path, dst.ref("app:v2"))
	if !errors.Is(err, imo.ErrDigestMismatch) {
		t.Errorf("Push() = %v, want ErrDigestMismatch", err)
	}
	if n := dst.count(http.MethodPut, "/manifests/"); n != 0 {
		t.Errorf("Push() of a corrupt archive wrote %d manifests", n)
	}
}

// TestPushRefusesBadArchives checks that archives the reader refuses are
// refused by push before it sends anything that writes.
func TestPushRefusesBadArchives(t *testing.T) {
	t.Parallel()
	src, _ := setup(t, docker, "linux/amd64")
	dst := newTestRegistry(t, nil)
	inc := imo.New(imo.WithPlainHTTP())
	good, err := pull(t, inc, imo.Scratch, src.ref("app:v2"))
	if err != nil {
		t.Fatal(err)
	}
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write(good)
	zw.Close()
	for name, b := range map[string][]byte{
		"not a tar":       []byte("hello, this is not a tar archive at all"),
		"gzip-compressed": gz.Bytes(),
		"truncated":       good[:len(good)/2],
		"no trailer":      good[:len(good)-1536],
	} {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "bad.tar")
			if err := os.WriteFile(path, b, 0o644); err != nil {
				t.Fatal(err)
			}
			dst.resetCounts()
			if err := inc.Push(context.Background(), path, dst.ref("app:v2")); !errors.Is(err, imo.ErrInvalidArchive) {
				t.Errorf("Push() = %v, want ErrInvalidArchive", err)
			}
			for _, method := range []string{http.MethodPost, http.MethodPut, http.MethodPatch} {
				if n := dst.count(method, ""); n != 0 {
					t.Errorf("Push() of a bad archive sent %d %s requests", n, method)
				}
			}
		})
	}
}

func TestPushStream(t *testing.T) {
	t.Parallel()
	src, pair := setup(t, docker, "linux/amd64")
	dst := newTestRegistry(t, nil)
	spool := t.TempDir()
	inc := imo.New(imo.WithPlainHTTP(), imo.WithTempDir(spool))
	b, err := pull(t, inc, imo.Scratch, src.ref("app:v2"))
	if err != nil {
		t.Fatal(err)
	}
	pushed, err := pushStream(context.Background(), inc, spool, bytes.NewReader(b), dst.ref("app:v2"))
	if err != nil {
		t.Fatalf("PushStream() = %v", err)
	}
	if want := dst.ref("app:v2@") + digest(t, pair.V2).String(); len(pushed) != 1 || pushed[0].Pushed().String() != want {
		t.Errorf("PushStream() = %v, want %s", pushed, want)
	}
	if left, _ := os.ReadDir(spool); len(left) != 0 {
		t.Errorf("PushStream() left %d files in its temporary directory", len(left))
	}
	if got, want := manifests(t, dst.ref("app:v2")), manifests(t, src.ref("app:v2")); !slices.EqualFunc(got, want, bytes.Equal) {
		t.Error("pushed manifests differ from the source's")
	}
}

func TestPushDigestDestination(t *testing.T) {
	t.Parallel()
	src, pair := setup(t, docker, "linux/amd64")
	dst := newTestRegistry(t, nil)
	inc := imo.New(imo.WithPlainHTTP())
	arc := pullFile(t, inc, imo.Scratch, src.ref("app:v2"))
	want := digest(t, pair.V2)
	if err := inc.Push(context.Background(), arc, dst.ref("app@"+want.String())); err != nil {
		t.Errorf("Push(by its digest) = %v", err)
	}
	other := digest(t, pair.V1)
	if err := inc.Push(context.Background(), arc, dst.ref("app@"+other.String())); err == nil {
		t.Error("Push(by another digest) = nil error")
	}
}

func compareHash(a, b v1.Hash) int { return strings.Compare(a.String(), b.String()) }

// flipByte corrupts the middle byte of the named entry of the tar at path.
func flipByte(t *testing.T, path, name string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	r := bytes.NewReader(b)
	tr := tar.NewReader(r)
	for {
		h, err := tr.Next()
		if err != nil {
			t.Fatalf("no %s in %s: %v", name, path, err)
		}
		if h.Name == name {
			off := len(b) - r.Len() // tar reads headers only, so this is where the content starts
			b[off+int(h.Size)/2] ^= 0xff
			break
		}
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestCancelStopsEverything cancels PullToFile and Push while a transfer
// stalls, and checks that they return context.Canceled, leave no file or
// tag, and leave no goroutine behind.
func TestCancelStopsEverything(t *testing.T) {
	src, pair := setup(t, docker, "linux/amd64", "linux/arm64")
	arc := pullFile(t, imo.New(imo.WithPlainHTTP()), imo.Scratch, src.ref("app:v2"))
	stalled := make(chan struct{}, 16)
	var armed atomic.Bool
	stall := func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if !armed.Load() {
				h.ServeHTTP(w, r)
				return
			}
			blobGet := r.Method == http.MethodGet && strings.Contains(r.URL.Path, pair.Changed[0].String())
			if blobGet || r.Method == http.MethodPatch || (r.Method == http.MethodPut && strings.Contains(r.URL.Path, "/uploads/")) {
				// Read the body, so that the server notices when the client goes.
				io.Copy(io.Discard, r.Body)
				stalled <- struct{}{}
				<-r.Context().Done()
				return
			}
			h.ServeHTTP(w, r)
		})
	}
	slowSrc := newTestRegistry(t, stall)
	slowSrc.write(t, slowSrc.ref("app:v2"), pair.V2)
	slowDst := newTestRegistry(t, stall)
	armed.Store(true)
	dir := t.TempDir()

	for _, op := range []struct {
		name string
		run  func(context.Context) error
	}{
		{"PullToFile", func(ctx context.Context) error {
			_, err := pullToFile(ctx, imo.New(imo.WithPlainHTTP()), imo.Scratch, slowSrc.ref("app:v2"), filepath.Join(dir, "out.tar"))
			return err
		}},
		{"Push", func(ctx context.Context) error {
			return imo.New(imo.WithPlainHTTP()).Push(ctx, arc, slowDst.ref("app:v2"))
		}},
	} {
		t.Run(op.name, func(t *testing.T) {
			defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			errc := make(chan error, 1)
			go func() { errc <- op.run(ctx) }()
			select {
			case <-stalled:
			case err := <-errc:
				t.Fatalf("%s ended before stalling: %v", op.name, err)
			}
			cancel()
			if err := <-errc; !errors.Is(err, context.Canceled) {
				t.Errorf("%s after cancel = %v, want context.Canceled", op.name, err)
			}
		})
	}
	if entries, _ := os.ReadDir(dir); len(entries) > 1 || len(entries) == 1 && entries[0].Name() != "out.tar.partial" {
		t.Errorf("a cancelled PullToFile left %v; want at most out.tar.partial, to resume", entries)
	}
	if _, err := headDigest(slowDst.ref("app:v2")); err == nil {
		t.Error("a cancelled push left a tag")
	}
}

// TestPushWithExpiringTokens makes the token expire exactly when each
// upload's PUT arrives, so that go-containerregistry's bearer transport
// answers the 401 by fetching a new token and sending the PUT again: the
// PUT sent again must still carry its bytes.
func TestPushWithExpiringTokens(t *testing.T) {
	t.Parallel()
	src, pair := setup(t, docker, "linux/amd64")
	arc := pullFile(t, imo.New(imo.WithPlainHTTP()), imo.Scratch, src.ref("app:v2"))
	var mu sync.Mutex
	issued, expired := 0, map[string]bool{}
	dst := newTestRegistry(t, func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			mu.Lock()
			if r.URL.Path == "/token" {
				issued++
				fmt.Fprintf(w, `{"token":"t%d"}`, issued)
				mu.Unlock()
				return
			}
			valid := r.Header.Get("Authorization") == fmt.Sprintf("Bearer t%d", issued)
			if valid && r.Method == http.MethodPut && strings.Contains(r.URL.Path, "/uploads/") && !expired[r.URL.Path] {
				expired[r.URL.Path] = true
				issued++ // the token in use expires now
				valid = false
			}
			mu.Unlock()
			if !valid {
				w.Header().Set("WWW-Authenticate", fmt.Sprintf(`Bearer realm="http://%s/token",service="test"`, r.Host))
				http.Error(w, "token expired", http.StatusUnauthorized)
				return
			}
			h.ServeHTTP(w, r)
		})
	})
	inc := imo.New(imo.WithPlainHTTP(), imo.WithPushAuth("u", "p"), imo.WithJobs(1))
	if err := inc.Push(context.Background(), arc, dst.ref("app:v2")); err != nil {
		t.Fatalf("Push() with expiring tokens = %v", err)
	}
	mu.Lock()
	n := len(expired)
	mu.Unlock()
	if n == 0 {
		t.Error("no upload met an expired token: the test tested nothing")
	}
	if got, err := headDigest(dst.ref("app:v2")); err != nil || got != digest(t, pair.V2) {
		t.Errorf("app:v2 = %s (%v), want %s", got, err, digest(t, pair.V2))
	}
}
