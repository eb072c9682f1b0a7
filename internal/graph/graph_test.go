package graph

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/imokit/imo/internal/verify"
)

// memory is a Fetcher of manifests held in memory.
type memory map[v1.Hash][]byte

func (m memory) Manifest(_ context.Context, d v1.Descriptor) ([]byte, error) {
	raw, ok := m[d.Digest]
	if !ok {
		return nil, fmt.Errorf("no manifest %s", d.Digest)
	}
	return raw, nil
}

// put stores v as a manifest of media type mt and returns its descriptor.
func (m memory) put(t *testing.T, mt types.MediaType, v any) v1.Descriptor {
	t.Helper()
	raw, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	h, size, err := v1.SHA256(bytes.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	m[h] = raw
	return v1.Descriptor{MediaType: mt, Digest: h, Size: size}
}

func (m memory) node(d v1.Descriptor) Node { return Node{Desc: d, Raw: m[d.Digest]} }

func layer(c byte) v1.Descriptor {
	return v1.Descriptor{MediaType: types.OCILayer, Digest: v1.Hash{Algorithm: "sha256", Hex: strings.Repeat(string(c), 64)}, Size: 100}
}

func image(m memory, t *testing.T, config byte, layers ...v1.Descriptor) v1.Descriptor {
	return m.put(t, types.OCIManifestSchema1, v1.Manifest{SchemaVersion: 2, MediaType: types.OCIManifestSchema1,
		Config: v1.Descriptor{MediaType: types.OCIConfigJSON, Digest: layer(config).Digest, Size: 10}, Layers: layers})
}

func TestWalk(t *testing.T) {
	m := memory{}
	amd := image(m, t, '1', layer('a'), layer('e'), layer('e'))
	arm := image(m, t, '2', layer('b'), layer('e'))
	amd.Platform = &v1.Platform{OS: "linux", Architecture: "amd64"}
	arm.Platform = &v1.Platform{OS: "linux", Architecture: "arm64"}
	idx := m.put(t, types.OCIImageIndex, v1.IndexManifest{SchemaVersion: 2, MediaType: types.OCIImageIndex, Manifests: []v1.Descriptor{amd, arm, amd}})
	g, err := Walk(context.Background(), m.node(idx), m, "memory", 2)
	if err != nil {
		t.Fatal(err)
	}
	if len(g.Manifests) != 3 || g.Top().Desc.Digest != idx.Digest {
		t.Errorf("Walk() read %d manifests, top %s; want the index and its two children once", len(g.Manifests), g.Top().Desc.Digest)
	}
	var order []string
	for _, b := range g.Blobs {
		order = append(order, b.Desc.Digest.Hex[:1])
	}
	if got := strings.Join(order, ""); got != "1ae2b" {
		t.Errorf("Walk() blobs in order %q, want %q (each once, in first use)", got, "1ae2b")
	}
	shared, _ := g.Blob(layer('e').Digest)
	if want := []string{"linux/amd64 " + amd.Digest.String(), "linux/arm64 " + arm.Digest.String()}; fmt.Sprint(shared.NeededBy) != fmt.Sprint(want) {
		t.Errorf("the shared layer is needed by %v, want %v", shared.NeededBy, want)
	}
	if !g.HasManifest(arm.Digest) || g.HasManifest(layer('a').Digest) {
		t.Error("HasManifest() answers wrongly")
	}
	merged := Merge([]*Graph{g, g})
	if len(merged.Blobs) != len(g.Blobs) || len(merged.Manifests) != len(g.Manifests) {
		t.Errorf("Merge() of a graph with itself has %d blobs, %d manifests", len(merged.Blobs), len(merged.Manifests))
	}
}

func TestWalkRefuses(t *testing.T) {
	m := memory{}
	img := image(m, t, '1', layer('a'))
	deep := img
	for range MaxDepth + 1 {
		deep = m.put(t, types.OCIImageIndex, v1.IndexManifest{SchemaVersion: 2, MediaType: types.OCIImageIndex, Manifests: []v1.Descriptor{deep}})
	}
	schema1 := m.put(t, types.DockerManifestSchema1, map[string]any{"schemaVersion": 1})
	altered := img
	altered.Size++
	tests := []struct {
		name string
		top  Node
		want error
	}{
		{"nested too deep", m.node(deep), ErrInvalidManifest},
		{"Docker schema 1", m.node(schema1), ErrUnsupportedMediaType},
		{"bytes that do not match", Node{Desc: altered, Raw: m[img.Digest]}, verify.ErrMismatch},
		{"does not parse", Node{Desc: m.put(t, types.OCIManifestSchema1, "not a manifest"), Raw: []byte(`"not a manifest"`)}, ErrInvalidManifest},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := Walk(context.Background(), tc.top, m, "memory", 1); !errors.Is(err, tc.want) {
				t.Errorf("Walk() = %v, want %v", err, tc.want)
			}
		})
	}
}
