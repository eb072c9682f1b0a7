package imo_test

import (
	"bytes"
	"context"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/imokit/imo"
	"github.com/imokit/imo/archive"
)

// rangeCounter counts the blob requests that ask for a range and, when
// ignore is set, answers them as a registry that ignores Range does.
type rangeCounter struct {
	ranged atomic.Int64
	ignore bool
}

func (c *rangeCounter) wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet && strings.Contains(r.URL.Path, "/blobs/") && r.Header.Get("Range") != "" {
			c.ranged.Add(1)
			if c.ignore {
				r.Header.Del("Range")
			}
		}
		h.ServeHTTP(w, r)
	})
}

// TestPullInRanges pulls an image with one layer of three ranges to a
// file: with several jobs the layer comes in ranges, and the
// archive is byte for byte the stream's (which takes each blob in one
// request); from a registry that ignores Range, it comes in one request.
func TestPullInRanges(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	img, err := random.Image(2*archive.ChunkSize+archive.ChunkSize/2, 1)
	if err != nil {
		t.Fatal(err)
	}
	for _, ignore := range []bool{false, true} {
		c := &rangeCounter{ignore: ignore}
		src := newTestRegistry(t, c.wrap)
		src.write(t, src.ref("big:v1"), img)
		inc := imo.New(imo.WithPlainHTTP(), imo.WithJobs(4))
		want, err := pull(t, inc, imo.Scratch, src.ref("big:v1"))
		if err != nil {
			t.Fatal(err)
		}
		c.ranged.Store(0)
		path := filepath.Join(t.TempDir(), "big.tar")
		if _, err := pullToFile(ctx, inc, imo.Scratch, src.ref("big:v1"), path); err != nil {
			t.Fatalf("PullToFile() = %v", err)
		}
		got, _ := os.ReadFile(path)
		if !bytes.Equal(got, want) {
			t.Errorf("ignore Range %v: the archive pulled in ranges differs from the stream", ignore)
		}
		switch n := c.ranged.Load(); {
		case !ignore && n != 3:
			t.Errorf("the layer came in %d ranges, want 3", n)
		case ignore && n != 1:
			t.Errorf("a registry ignoring Range was asked for %d ranges, want 1 (then the blob whole)", n)
		}
	}
}
