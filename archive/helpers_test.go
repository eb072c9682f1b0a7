package archive

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"sync"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/imokit/imo/internal/verify"
)

// testBlobs holds the blobs of test archives by digest, and serves them.
type testBlobs map[v1.Hash][]byte

// add keeps b and returns its descriptor.
func (tb testBlobs) add(mt types.MediaType, b []byte) v1.Descriptor {
	h, n, _ := v1.SHA256(bytes.NewReader(b))
	tb[h] = b
	return v1.Descriptor{MediaType: mt, Digest: h, Size: n}
}

// fetch serves a blob, verified, as a Fetch.
func (tb testBlobs) fetch(_ context.Context, d v1.Descriptor) (io.ReadCloser, error) {
	r, err := verify.NewReader(bytes.NewReader(tb[d.Digest]), d, "memory", nil)
	return io.NopCloser(r), err
}

// fetchFrom serves a blob from off on, as a FetchFrom.
func (tb testBlobs) fetchFrom(_ context.Context, d v1.Descriptor, off int64) (io.ReadCloser, string, error) {
	return io.NopCloser(bytes.NewReader(tb[d.Digest][off:])), "memory", nil
}

// testConfig is the config of every test image.
const testConfig = `{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}`

// oneImage is the contents of an archive of one image,
// reg.example/app:v2, of the given layers: its config and manifest
// carried, each layer carried unless leftOut says it is in base.
func oneImage(t testing.TB, tb testBlobs, layers []v1.Descriptor, leftOut func(v1.Descriptor) bool) Contents {
	t.Helper()
	config := tb.add(types.OCIConfigJSON, []byte(testConfig))
	manifest, err := json.Marshal(v1.Manifest{SchemaVersion: 2, MediaType: types.OCIManifestSchema1, Config: config, Layers: layers})
	if err != nil {
		t.Fatal(err)
	}
	md := tb.add(types.OCIManifestSchema1, manifest)
	plan := &Plan{Version: PlanVersion,
		Images: []PlanImage{NewPlanImage(ImageRef{Reference: "reg.example/app:v2", Digest: md.Digest}, ImageRef{Reference: "reg.example/app:v1"}, []v1.Descriptor{md})},
		Blobs:  []PlanBlob{{MediaType: config.MediaType, Digest: config.Digest, Size: config.Size, Config: true, Included: true}}}
	for _, l := range layers {
		b := PlanBlob{MediaType: l.MediaType, Digest: l.Digest, Size: l.Size, Included: true}
		if leftOut != nil && leftOut(l) {
			b.Included, b.Reason = false, ReasonInBase
		}
		plan.Blobs = append(plan.Blobs, b)
	}
	md.Annotations = map[string]string{RefNameAnnotation: "reg.example/app:v2"}
	return Contents{Plan: plan, Index: &v1.IndexManifest{SchemaVersion: 2, Manifests: []v1.Descriptor{md}},
		Manifests: []Manifest{{Digest: md.Digest, Raw: manifest}}}
}

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
