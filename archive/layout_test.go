package archive

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/imokit/imo/internal/verify"
)

// memory is storage in memory, written and read at offsets.
type memory struct {
	mu sync.Mutex
	b  []byte
}

func (m *memory) WriteAt(p []byte, off int64) (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if end := off + int64(len(p)); end > int64(len(m.b)) {
		m.b = append(m.b, make([]byte, end-int64(len(m.b)))...)
	}
	return copy(m.b[off:], p), nil
}

func (m *memory) ReadAt(p []byte, off int64) (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if off >= int64(len(m.b)) {
		return 0, io.EOF
	}
	n := copy(p, m.b[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// TestBuild lays out an archive with a fetched blob, a blob on disk and a
// delta, writes it both ways, and reads it back.
func TestBuild(t *testing.T) {
	blobs := map[v1.Hash][]byte{}
	desc := func(mt types.MediaType, b []byte) v1.Descriptor {
		h, n, _ := v1.SHA256(bytes.NewReader(b))
		blobs[h] = b
		return v1.Descriptor{MediaType: mt, Digest: h, Size: n}
	}
	config := desc(types.OCIConfigJSON, []byte(`{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}`))
	fetched := desc(types.OCILayer, bytes.Repeat([]byte("layer "), 1000))
	onDisk := desc(types.OCILayer, bytes.Repeat([]byte("local "), 700))
	manifest, err := json.Marshal(v1.Manifest{SchemaVersion: 2, MediaType: types.OCIManifestSchema1, Config: config, Layers: []v1.Descriptor{fetched, onDisk}})
	if err != nil {
		t.Fatal(err)
	}
	md := desc(types.OCIManifestSchema1, manifest)
	dir := t.TempDir()
	local := filepath.Join(dir, "local")
	deltaFile := filepath.Join(dir, "delta")
	os.WriteFile(local, blobs[onDisk.Digest], 0o644)
	os.WriteFile(deltaFile, []byte("a delta"), 0o644)
	plan := &Plan{Version: PlanVersion, Images: []PlanImage{NewPlanImage(ImageRef{Reference: "reg.example/app:v2", Digest: md.Digest}, ImageRef{Reference: "scratch"}, []v1.Descriptor{md})},
		Blobs: []PlanBlob{
			{MediaType: fetched.MediaType, Digest: fetched.Digest, Size: fetched.Size, Included: true},
			{MediaType: config.MediaType, Digest: config.Digest, Size: config.Size, Config: true, Included: true},
			{MediaType: onDisk.MediaType, Digest: onDisk.Digest, Size: onDisk.Size, Included: true},
		}}
	md.Annotations = map[string]string{RefNameAnnotation: "reg.example/app:v2"}
	l, err := Build(Contents{Plan: plan, Index: &v1.IndexManifest{SchemaVersion: 2, Manifests: []v1.Descriptor{md}},
		Manifests: []Manifest{{Digest: md.Digest, Raw: manifest}},
		Local:     map[v1.Hash]File{onDisk.Digest: {Path: local, Size: onDisk.Size}}})
	if err != nil {
		t.Fatal(err)
	}
	if l.Fetched() != config.Size+fetched.Size {
		t.Errorf("Fetched() = %d, want the config and the fetched layer, %d", l.Fetched(), config.Size+fetched.Size)
	}
	fetch := func(_ context.Context, d v1.Descriptor) (io.ReadCloser, error) {
		r, err := verify.NewReader(bytes.NewReader(blobs[d.Digest]), d, "memory", nil)
		return io.NopCloser(r), err
	}
	var streamed bytes.Buffer
	if err := l.WriteTo(context.Background(), &streamed, fetch, 2); err != nil {
		t.Fatal(err)
	}
	var placed memory
	fetchFrom := func(_ context.Context, d v1.Descriptor, off int64) (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(blobs[d.Digest][off:])), nil
	}
	if _, err := l.Resume(&memory{}, "memory", false).Write(context.Background(), &placed, fetchFrom, 2); err != nil {
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
	if err := l.WriteTo(context.Background(), io.Discard, failing, 2); !errors.Is(err, broken) {
		t.Errorf("WriteTo with a failing fetch = %v, want its error", err)
	}
	failingFrom := func(context.Context, v1.Descriptor, int64) (io.ReadCloser, error) { return nil, broken }
	if _, err := l.Resume(&memory{}, "memory", false).Write(context.Background(), &memory{}, failingFrom, 2); !errors.Is(err, broken) {
		t.Errorf("Resume().Write with a failing fetch = %v, want its error", err)
	}
}
