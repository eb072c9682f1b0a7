package imo_test

import (
	"bytes"
	"context"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/imokit/imo"
)

// cutter cuts the first download of one blob off half-way, and counts the
// bytes served of it.
type cutter struct {
	mu     sync.Mutex
	digest v1.Hash
	cut    bool
	served int64
	fail   bool // answer every blob download with a server error instead
}

func (c *cutter) wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c.mu.Lock()
		fail := c.fail && r.Method == http.MethodGet && strings.Contains(r.URL.Path, "/blobs/")
		tapped := r.Method == http.MethodGet && strings.HasSuffix(r.URL.Path, "/blobs/"+c.digest.String())
		c.mu.Unlock()
		switch {
		case fail:
			http.Error(w, "down for maintenance", http.StatusServiceUnavailable)
		case tapped:
			h.ServeHTTP(&cutWriter{ResponseWriter: w, c: c}, r)
		default:
			h.ServeHTTP(w, r)
		}
	})
}

type cutWriter struct {
	http.ResponseWriter
	c *cutter
}

func (w *cutWriter) Write(p []byte) (int, error) {
	c := w.c
	c.mu.Lock()
	cutNow := !c.cut && len(p) > 1
	if cutNow {
		p, c.cut = p[:len(p)/2], true
	}
	c.served += int64(len(p))
	c.mu.Unlock()
	n, err := w.ResponseWriter.Write(p)
	if cutNow {
		w.ResponseWriter.(http.Flusher).Flush()
		panic(http.ErrAbortHandler) // the connection drops
	}
	return n, err
}

// TestResumeAfterFailure cuts a download off, with no retry, then writes
// again: to a file and to volumes, only the rest of the blob is fetched,
// and the result is what a clean write makes.
func TestResumeAfterFailure(t *testing.T) {
	t.Parallel()
	for _, volumes := range []bool{false, true} {
		t.Run(map[bool]string{false: "file", true: "volumes"}[volumes], func(t *testing.T) {
			t.Parallel()
			c := &cutter{}
			src := newTestRegistry(t, c.wrap)
			pair := newAppPair(t, docker, "linux/amd64", "linux/arm64")
			src.write(t, src.ref("app:v2"), pair.V2)
			c.digest = pair.Changed[0]
			ctx := context.Background()
			write := func(inc *imo.Incremental, out string) ([]string, error) {
				d, err := inc.Resolve(ctx, imo.Pair{Base: imo.Scratch, Final: src.ref("app:v2")})
				if err != nil {
					t.Fatal(err)
				}
				defer d.Close()
				if volumes {
					return d.WriteVolumes(ctx, out, 64<<10, 1)
				}
				return []string{out}, d.WriteFile(ctx, out)
			}
			out := filepath.Join(t.TempDir(), "app.tar")
			if _, err := write(imo.New(imo.WithPlainHTTP(), imo.WithRetries(0, 0)), out); err == nil {
				t.Fatal("a write whose download was cut off, with no retry, succeeded")
			}
			if _, err := os.Stat(out + ".partial"); err != nil {
				t.Fatalf("a failed write left no partial file to resume: %v", err)
			}
			c.mu.Lock()
			firstServed := c.served
			c.served = 0
			c.mu.Unlock()
			got, err := write(imo.New(imo.WithPlainHTTP()), out)
			if err != nil {
				t.Fatal(err)
			}
			c.mu.Lock()
			served := c.served
			c.mu.Unlock()
			if size := blobSize(t, src, pair.Changed[0]); served == 0 || served+firstServed != size {
				t.Errorf("the two writes fetched %d and %d bytes of a blob of %d: the second should fetch only the rest", firstServed, served, size)
			}
			want, err := write(imo.New(imo.WithPlainHTTP()), filepath.Join(t.TempDir(), "app.tar"))
			if err != nil {
				t.Fatal(err)
			}
			for k := range want {
				a, _ := os.ReadFile(got[k])
				b, _ := os.ReadFile(want[k])
				if len(a) == 0 || !bytes.Equal(a, b) {
					t.Errorf("%s differs from a clean write's %s", got[k], want[k])
				}
			}
			if _, err := os.Stat(out + ".partial"); err == nil {
				t.Error("a finished write left its partial file")
			}
		})
	}
}

// TestFailureBeforeAnyByteLeavesNothing checks that a write that fails
// before any blob byte arrives leaves no partial file or volume.
func TestFailureBeforeAnyByteLeavesNothing(t *testing.T) {
	t.Parallel()
	c := &cutter{}
	src := newTestRegistry(t, c.wrap)
	pair := newAppPair(t, docker, "linux/amd64")
	src.write(t, src.ref("app:v2"), pair.V2)
	c.fail = true
	ctx := context.Background()
	inc := imo.New(imo.WithPlainHTTP(), imo.WithRetries(0, 0))
	d, err := inc.Resolve(ctx, imo.Pair{Base: imo.Scratch, Final: src.ref("app:v2")})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	dir := t.TempDir()
	if err := d.WriteFile(ctx, filepath.Join(dir, "app.tar")); err == nil {
		t.Error("WriteFile from a registry that serves no blob succeeded")
	}
	if _, err := d.WriteVolumes(ctx, filepath.Join(dir, "set.tar"), 64<<10, 1); err == nil {
		t.Error("WriteVolumes from a registry that serves no blob succeeded")
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Errorf("writes that failed before any blob byte left %v", entries)
	}
}

// blobSize is the size of the blob h in the registry.
func blobSize(t *testing.T, r *testRegistry, h v1.Hash) int64 {
	t.Helper()
	req, err := http.NewRequest(http.MethodHead, "http://"+r.Host+"/v2/app/blobs/"+h.String(), nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.ContentLength
}
