package sandbox

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"io"
	"maps"
	"math/rand/v2"
	"slices"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// Format is a family of media types.
type Format struct {
	Name     string
	Manifest types.MediaType
	Config   types.MediaType
	Layer    types.MediaType
	Index    types.MediaType
}

// The two families of media types registries serve.
var (
	Docker = Format{"docker", types.DockerManifestSchema2, types.DockerConfigJSON, types.DockerLayer, types.DockerManifestList}
	OCI    = Format{"oci", types.OCIManifestSchema1, types.OCIConfigJSON, types.OCILayer, types.OCIImageIndex}
)

// Layer builds a gzip-compressed tar layer of media type mt holding files,
// given as name, content, name, content, ...
func Layer(mt types.MediaType, files ...string) (v1.Layer, error) {
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	tw := tar.NewWriter(zw)
	for i := 0; i+1 < len(files); i += 2 {
		if err := tw.WriteHeader(&tar.Header{Name: files[i], Mode: 0o644, Size: int64(len(files[i+1])), Typeflag: tar.TypeReg}); err != nil {
			return nil, err
		}
		if _, err := io.WriteString(tw, files[i+1]); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	b := buf.Bytes()
	return tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(b)), nil
	}, tarball.WithMediaType(mt))
}

// Image builds an image of format f for platform p from layers.
func (f Format) Image(p v1.Platform, layers ...v1.Layer) (v1.Image, error) {
	img, err := mutate.AppendLayers(empty.Image, layers...)
	if err != nil {
		return nil, err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture, cf.Variant = p.OS, p.Architecture, p.Variant
	if img, err = mutate.ConfigFile(img, cf); err != nil {
		return nil, err
	}
	return mutate.ConfigMediaType(mutate.MediaType(img, f.Manifest), f.Config), nil
}

// ImageIndex builds an index of format f from images by platform
// ("os/arch[/variant]"), in the platforms' sorted order. Its descriptors
// carry media type, size, digest and platform only, as docker buildx and
// podman write them.
func (f Format) ImageIndex(imgs map[string]v1.Image) (v1.ImageIndex, error) {
	idx := mutate.IndexMediaType(empty.Index, f.Index)
	for _, ps := range slices.Sorted(maps.Keys(imgs)) {
		p, err := v1.ParsePlatform(ps)
		if err != nil {
			return nil, err
		}
		idx = mutate.AppendManifests(idx, mutate.IndexAddendum{Add: imgs[ps], Descriptor: v1.Descriptor{Platform: p}})
	}
	im, err := idx.IndexManifest()
	if err != nil {
		return nil, err
	}
	im = im.DeepCopy()
	for i := range im.Manifests {
		im.Manifests[i].ArtifactType = ""
	}
	raw, err := json.Marshal(im)
	if err != nil {
		return nil, err
	}
	return &plainIndex{children: idx, raw: raw}, nil
}

// plainIndex is an index whose manifest is raw, with the children of the
// index it embeds.
type plainIndex struct {
	children v1.ImageIndex
	raw      []byte
}

func (p *plainIndex) MediaType() (types.MediaType, error)         { return p.children.MediaType() }
func (p *plainIndex) Image(h v1.Hash) (v1.Image, error)           { return p.children.Image(h) }
func (p *plainIndex) ImageIndex(h v1.Hash) (v1.ImageIndex, error) { return p.children.ImageIndex(h) }

func (p *plainIndex) RawManifest() ([]byte, error) { return p.raw, nil }

func (p *plainIndex) Digest() (v1.Hash, error) {
	h, _, err := v1.SHA256(bytes.NewReader(p.raw))
	return h, err
}

func (p *plainIndex) Size() (int64, error) { return int64(len(p.raw)), nil }

func (p *plainIndex) IndexManifest() (*v1.IndexManifest, error) {
	return v1.ParseIndexManifest(bytes.NewReader(p.raw))
}

// AppPair is a v1 and a v2 of an application that share their lower
// layers: an OS layer per platform and a runtime layer, under an app layer
// that changes between versions.
type AppPair struct {
	// V1 and V2 are v1.Image values with one platform, v1.ImageIndex
	// values with several.
	V1, V2 Artifact
	// Shared are the layers V2 shares with V1; Changed are those only V2 has.
	Shared, Changed []v1.Hash
}

// Artifact is an image or an index.
type Artifact interface {
	Digest() (v1.Hash, error)
	RawManifest() ([]byte, error)
	MediaType() (types.MediaType, error)
}

// NewAppPair builds the pair in format f for the given platforms
// ("os/arch[/variant]"); with one platform the images are single-platform.
// Layers hold generated text (16 to 256 KiB per file), so the pair is small
// and deterministic: the same arguments give the same digests.
func NewAppPair(f Format, platforms ...string) (*AppPair, error) {
	if len(platforms) == 0 {
		return nil, fmt.Errorf("NewAppPair: no platform")
	}
	pair := &AppPair{}
	runtime, err := Layer(f.Layer, "usr/lib/runtime.txt", Text("runtime", 256<<10))
	if err != nil {
		return nil, err
	}
	v1s, v2s := map[string]v1.Image{}, map[string]v1.Image{}
	for _, ps := range platforms {
		p, err := v1.ParsePlatform(ps)
		if err != nil {
			return nil, err
		}
		osLayer, err := Layer(f.Layer, "etc/os-release", "ID=sampleos\nARCH="+ps+"\n", "usr/share/doc/os.txt", Text("os "+ps, 128<<10))
		if err != nil {
			return nil, err
		}
		app1, err := Layer(f.Layer, "app/VERSION", "1.0.0 "+ps, "app/notes.txt", Text("app 1 "+ps, 16<<10))
		if err != nil {
			return nil, err
		}
		app2, err := Layer(f.Layer, "app/VERSION", "2.0.0 "+ps, "app/notes.txt", Text("app 2 "+ps, 16<<10))
		if err != nil {
			return nil, err
		}
		if v1s[ps], err = f.Image(*p, osLayer, runtime, app1); err != nil {
			return nil, err
		}
		if v2s[ps], err = f.Image(*p, osLayer, runtime, app2); err != nil {
			return nil, err
		}
		osDigest, err := osLayer.Digest()
		if err != nil {
			return nil, err
		}
		appDigest, err := app2.Digest()
		if err != nil {
			return nil, err
		}
		pair.Shared = append(pair.Shared, osDigest)
		pair.Changed = append(pair.Changed, appDigest)
	}
	rd, err := runtime.Digest()
	if err != nil {
		return nil, err
	}
	pair.Shared = append(pair.Shared, rd)
	if len(platforms) == 1 {
		pair.V1, pair.V2 = v1s[platforms[0]], v2s[platforms[0]]
		return pair, nil
	}
	if pair.V1, err = f.ImageIndex(v1s); err != nil {
		return nil, err
	}
	pair.V2, err = f.ImageIndex(v2s)
	return pair, err
}

// words are what [Text] writes.
var words = strings.Fields(`the of and to in is for on that with as by this be are from or at an
image layer registry blob manifest digest config platform index archive push pull base final
site ship factory network edge cluster update release version build tag repository mirror`)

// Text returns n bytes of lines of words chosen by a generator seeded from
// seed: text that compresses like prose, the same for the same arguments.
func Text(seed string, n int) string {
	h := fnv.New64a()
	h.Write([]byte(seed))
	rng := rand.New(rand.NewPCG(h.Sum64(), 0))
	var b strings.Builder
	b.Grow(n + 16)
	for col := 0; b.Len() < n; {
		w := words[rng.IntN(len(words))]
		b.WriteString(w)
		col += len(w) + 1
		if col > 72 {
			b.WriteByte('\n')
			col = 0
		} else {
			b.WriteByte(' ')
		}
	}
	return b.String()[:n]
}
