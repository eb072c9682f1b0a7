package archive

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// TestBuild lays out an archive with a fetched blob and a blob on disk,
// writes it both ways, and reads it back.
func TestBuild(t *testing.T) {
	blobs := testBlobs{}
	fetched := blobs.add(types.OCILayer, bytes.Repeat([]byte("layer "), 1000))
	onDisk := blobs.add(types.OCILayer, bytes.Repeat([]byte("local "), 700))
	c := oneImage(t, blobs, []v1.Descriptor{fetched, onDisk}, nil)
	config := c.Plan.Blobs[0]
	// Configs come before layers in the archive, whatever the plan's order.
	c.Plan.Blobs = append(c.Plan.Blobs[1:], config)
	local := filepath.Join(t.TempDir(), "local")
	os.WriteFile(local, blobs[onDisk.Digest], 0o644)
	c.Local = map[v1.Hash]File{onDisk.Digest: {Path: local, Size: onDisk.Size}}
	l, err := Build(c)
	if err != nil {
		t.Fatal(err)
	}
	if l.Fetched() != config.Size+fetched.Size {
		t.Errorf("Fetched() = %d, want the config and the fetched layer, %d", l.Fetched(), config.Size+fetched.Size)
	}
	var streamed bytes.Buffer
	if err := l.WriteTo(context.Background(), &streamed, blobs.fetch, nil, 2); err != nil {
		t.Fatal(err)
	}
	var placed memory
	if _, err := l.Resume(&memory{}, "memory", false).Write(context.Background(), &placed, blobs.fetchFrom, 2); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(streamed.Bytes(), placed.b) || int64(streamed.Len()) != l.Size() {
		t.Fatalf("WriteTo wrote %d bytes, Resume().Write %d, Size() says %d: they must agree", streamed.Len(), len(placed.b), l.Size())
	}
	a, err := read("built.tar", bytes.NewReader(streamed.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	p, err := a.Check(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range p.Blobs {
		if !b.Included {
			t.Errorf("blob %s is not carried", b.Digest)
		}
	}
	// Configs come before layers, whatever the plan's order.
	if strings.Index(streamed.String(), BlobName(config.Digest)) > strings.Index(streamed.String(), BlobName(fetched.Digest)) {
		t.Error("a layer comes before the config")
	}
	// A fetch that fails fails the write.
	broken := errors.New("the registry went away")
	failing := func(context.Context, v1.Descriptor) (io.ReadCloser, error) { return nil, broken }
	if err := l.WriteTo(context.Background(), io.Discard, failing, nil, 2); !errors.Is(err, broken) {
		t.Errorf("WriteTo with a failing fetch = %v, want its error", err)
	}
	failingFrom := func(context.Context, v1.Descriptor, int64) (io.ReadCloser, string, error) { return nil, "", broken }
	if _, err := l.Resume(&memory{}, "memory", false).Write(context.Background(), &memory{}, failingFrom, 2); !errors.Is(err, broken) {
		t.Errorf("Resume().Write with a failing fetch = %v, want its error", err)
	}
}
