//go:build linux

package main

import (
	"bytes"
	"context"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/imokit/imo/internal/outfile"
	"github.com/imokit/imo/internal/sandbox"
)

// blobTap counts the bytes a registry serves of one blob, and can hold a
// download once it has served some.
type blobTap struct {
	mu      sync.Mutex
	digest  v1.Hash
	served  int64
	holdAt  int64         // hold a download once it reaches this; 0: never
	reached chan struct{} // closed when a download is held
}

func (b *blobTap) wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b.mu.Lock()
		tapped := r.Method == http.MethodGet && b.digest.Hex != "" && strings.HasSuffix(r.URL.Path, "/blobs/"+b.digest.String())
		b.mu.Unlock()
		if tapped {
			w = &tappedWriter{ResponseWriter: w, tap: b, ctx: r.Context()}
		}
		h.ServeHTTP(w, r)
	})
}

// set taps digest, holding downloads at holdAt bytes (0: never).
func (b *blobTap) set(digest v1.Hash, holdAt int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.digest, b.served, b.holdAt, b.reached = digest, 0, holdAt, make(chan struct{})
}

func (b *blobTap) total() int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.served
}

type tappedWriter struct {
	http.ResponseWriter
	tap *blobTap
	ctx context.Context
}

func (w *tappedWriter) Write(p []byte) (int, error) {
	b := w.tap
	b.mu.Lock()
	if b.holdAt > 0 && b.served+int64(len(p)) > b.holdAt {
		p = p[:b.holdAt-b.served]
	}
	b.served += int64(len(p))
	hold := b.holdAt > 0 && b.served >= b.holdAt
	b.mu.Unlock()
	n, err := w.ResponseWriter.Write(p)
	if hold {
		w.ResponseWriter.(http.Flusher).Flush()
		select {
		case <-b.reached:
		default:
			close(b.reached)
		}
		<-w.ctx.Done() // until the client goes
		return n, w.ctx.Err()
	}
	return n, err
}

// TestKilledPullResumes kills imo with SIGKILL in the middle of a blob,
// then runs the same command again: it fetches only what the first run
// had not written, and writes the archive a clean pull writes. If the tag
// moved in between, the partial file is not used.
func TestKilledPullResumes(t *testing.T) {
	t.Parallel()
	tap := &blobTap{}
	src := sandbox.NewRegistry(tap.wrap, nil)
	t.Cleanup(src.Close)
	// image tags as big:v1 an image of one random layer of about size
	// bytes, and returns the layer.
	image := func(size int64) v1.Descriptor {
		layer, err := random.Layer(size, types.DockerLayer)
		if err != nil {
			t.Fatal(err)
		}
		img, err := mutate.AppendLayers(mutate.MediaType(mutate.ConfigMediaType(empty.Image, types.DockerConfigJSON), types.DockerManifestSchema2), layer)
		if err != nil {
			t.Fatal(err)
		}
		if err := src.Write(context.Background(), src.Ref("big:v1"), img); err != nil {
			t.Fatal(err)
		}
		h, err := layer.Digest()
		if err != nil {
			t.Fatal(err)
		}
		n, err := layer.Size()
		if err != nil {
			t.Fatal(err)
		}
		return v1.Descriptor{Digest: h, Size: n}
	}
	big := image(6 << 20)
	dir := t.TempDir()
	out := filepath.Join(dir, "big.tar")
	args := []string{"pull", "--plain-http", "-q", "scratch", src.Ref("big:v1"), "-o", out}

	killMidBlob := func() {
		t.Helper()
		tap.set(big.Digest, 3<<20+4321)
		c := startImo(t, nil, nil, args...)
		select {
		case <-tap.reached:
		case <-time.After(20 * time.Second):
			t.Fatalf("the download never reached the hold; stderr:\n%s", c.stderr)
		}
		time.Sleep(300 * time.Millisecond) // for imo to write what it received
		if code := c.stop(t, syscall.SIGKILL); code != -1 && code != 137 {
			t.Logf("imo exited with %d after SIGKILL", code)
		}
		if _, err := os.Stat(out + outfile.PartialSuffix); err != nil {
			t.Fatalf("a killed pull left no partial file: %v", err)
		}
		if _, err := os.Stat(out); err == nil {
			t.Fatal("a killed pull left its final file")
		}
	}
	killMidBlob()
	tap.set(big.Digest, 0)
	r := imoCmd(t, "", args...)
	if r.code != 0 {
		t.Fatal(r)
	}
	resumed := tap.total()
	if resumed <= 0 || resumed > big.Size-3<<20+1<<20 {
		t.Errorf("the resumed pull fetched %d bytes of the %d-byte blob; want no more than what the first pull had not written, and a journal step", resumed, big.Size)
	}
	if _, err := os.Stat(out + outfile.PartialSuffix); err == nil {
		t.Error("a finished pull left its partial file")
	}
	clean := filepath.Join(t.TempDir(), "clean.tar")
	if r := imoCmd(t, "", "pull", "--plain-http", "-q", "scratch", src.Ref("big:v1"), "-o", clean); r.code != 0 {
		t.Fatal(r)
	}
	if a, b := readFile(t, out), readFile(t, clean); !bytes.Equal(a, b) {
		t.Errorf("the resumed archive (%d bytes) differs from a clean pull (%d bytes)", len(a), len(b))
	}

	// The tag moves between the killed pull and the next: the partial file
	// is written over, with a message.
	os.Remove(out)
	killMidBlob()
	big = image(5 << 20)
	tap.set(big.Digest, 0)
	r = imoCmd(t, "", args...)
	if r.code != 0 || !strings.Contains(r.stderr, "not resuming") {
		t.Errorf("a pull after the tag moved: want it to say it does not resume:\n%s", r)
	}
	if r := imoCmd(t, "", "pull", "--plain-http", "-q", "scratch", src.Ref("big:v1"), "-o", clean); r.code != 0 {
		t.Fatal(r)
	}
	if a, b := readFile(t, out), readFile(t, clean); !bytes.Equal(a, b) {
		t.Error("the archive pulled after the tag moved differs from a clean pull of the new image")
	}
}

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
