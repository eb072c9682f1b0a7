package imo_test

import (
	"bytes"
	"context"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
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

// TestPullInRanges pulls an image with one layer of three ranges, to a
// file and as a stream: with several jobs the layer comes in ranges, and
// the archive is byte for byte the one a single job writes (each blob in
// one request); from a registry that ignores Range, the layer comes whole
// after the refused ranges (one for a file, those in flight for the
// stream).
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
		want, err := pull(t, imo.New(imo.WithPlainHTTP(), imo.WithJobs(1)), imo.Scratch, src.ref("big:v1"))
		if err != nil {
			t.Fatal(err)
		}
		var mu sync.Mutex
		events := map[imo.EventKind]int{}
		layer, _ := img.Layers()
		big, _ := layer[0].Digest()
		inc := imo.New(imo.WithPlainHTTP(), imo.WithJobs(4), imo.WithReporter(imo.ReporterFunc(func(e imo.Event) {
			if e.Digest == big {
				mu.Lock()
				events[e.Kind]++
				mu.Unlock()
			}
		})))
		for _, stream := range []bool{false, true} {
			c.ranged.Store(0)
			clear(events)
			var got []byte
			if stream {
				got, err = pull(t, inc, imo.Scratch, src.ref("big:v1"))
			} else {
				path := filepath.Join(t.TempDir(), "big.tar")
				if _, err = pullToFile(ctx, inc, imo.Scratch, src.ref("big:v1"), path); err == nil {
					got, err = os.ReadFile(path)
				}
			}
			if err != nil {
				t.Fatalf("pull (stream %v) = %v", stream, err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("ignore Range %v, stream %v: the archive pulled in ranges differs from one pulled with one job", ignore, stream)
			}
			wantRanges := int64(3)
			if ignore && !stream {
				wantRanges = 1
			}
			if n := c.ranged.Load(); n != wantRanges {
				t.Errorf("ignore Range %v, stream %v: %d range requests, want %d", ignore, stream, n, wantRanges)
			}
			if events[imo.BlobStarted] != 1 || events[imo.BlobDone] != 1 {
				t.Errorf("ignore Range %v, stream %v: the layer was reported started %d times and done %d times, want once each", ignore, stream, events[imo.BlobStarted], events[imo.BlobDone])
			}
		}
	}
}
