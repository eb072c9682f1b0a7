package main

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"os"
	"slices"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/imokit/imo/archive"
	"github.com/imokit/imo/internal/outfile"
	"golang.org/x/crypto/x509roots/fallback/bundle"
)

// The image's user: not root, as distroless and ko images run.
const user = "65532:65532"

// caBundle is the PEM bundle of the Mozilla root certificates that the Go
// module golang.org/x/crypto/x509roots/fallback pins: the same bytes on
// every machine. Roots that carry constraints PEM cannot say (distrust
// after a date) are left out.
func caBundle() ([]byte, error) {
	var b bytes.Buffer
	for root := range bundle.Roots() {
		if root.Constraint != nil {
			continue
		}
		if err := pem.Encode(&b, &pem.Block{Type: "CERTIFICATE", Bytes: root.Certificate}); err != nil {
			return nil, err
		}
	}
	if b.Len() == 0 {
		return nil, fmt.Errorf("no CA certificate in the bundle")
	}
	return b.Bytes(), nil
}

// blob is content and its descriptor.
type blob struct {
	v1.Descriptor
	data []byte
}

func newBlob(mt types.MediaType, data []byte) blob {
	h, size, _ := v1.SHA256(bytes.NewReader(data))
	return blob{Descriptor: v1.Descriptor{MediaType: mt, Digest: h, Size: size}, data: data}
}

// platformImage is the image of one platform.
type platformImage struct {
	platform   string
	binarySize int64
	layer      blob
	config     blob
	manifest   blob
}

// file is one file of the layer.
type file struct {
	name string
	mode int64
	data []byte
}

// layerTar writes files, and the directories above them, into a tar with
// every entry owned by root and dated modTime, in name order.
func layerTar(files []file, modTime time.Time) ([]byte, error) {
	dirs := map[string]bool{}
	for _, f := range files {
		for d := f.name; strings.Contains(d, "/"); {
			d = d[:strings.LastIndexByte(d, '/')]
			dirs[d+"/"] = true
		}
	}
	var headers []*tar.Header
	for d := range dirs {
		headers = append(headers, &tar.Header{Typeflag: tar.TypeDir, Name: d, Mode: 0o755, ModTime: modTime, Format: tar.FormatPAX})
	}
	content := map[string][]byte{}
	for _, f := range files {
		headers = append(headers, &tar.Header{Typeflag: tar.TypeReg, Name: f.name, Mode: f.mode, Size: int64(len(f.data)), ModTime: modTime, Format: tar.FormatPAX})
		content[f.name] = f.data
	}
	slices.SortFunc(headers, func(a, b *tar.Header) int { return strings.Compare(a.Name, b.Name) })
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, h := range headers {
		if err := tw.WriteHeader(h); err != nil {
			return nil, err
		}
		if _, err := tw.Write(content[h.Name]); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// compress gzips b at the best compression, with no name or time in the
// header: the same bytes give the same blob.
func compress(b []byte) ([]byte, error) {
	var buf bytes.Buffer
	zw, err := gzip.NewWriterLevel(&buf, gzip.BestCompression)
	if err != nil {
		return nil, err
	}
	if _, err := zw.Write(b); err != nil {
		return nil, err
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// newPlatformImage assembles the image of one platform from its binary
// and the CA bundle.
func newPlatformImage(platform, binary string, certs []byte, created time.Time, o options) (platformImage, error) {
	p, err := v1.ParsePlatform(platform)
	if err != nil {
		return platformImage{}, err
	}
	exe, err := os.ReadFile(binary)
	if err != nil {
		return platformImage{}, err
	}
	tarball, err := layerTar([]file{{"imo", 0o755, exe}, {"etc/ssl/certs/ca-certificates.crt", 0o644, certs}}, created)
	if err != nil {
		return platformImage{}, err
	}
	diffID, _, _ := v1.SHA256(bytes.NewReader(tarball))
	gz, err := compress(tarball)
	if err != nil {
		return platformImage{}, err
	}
	layer := newBlob(types.OCILayer, gz)
	cf := v1.ConfigFile{
		Architecture: p.Architecture, OS: p.OS, Variant: p.Variant, Created: v1.Time{Time: created},
		Config: v1.Config{
			Entrypoint: []string{"/imo"},
			User:       user,
			Env:        []string{"SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt"},
			Labels: map[string]string{
				"org.opencontainers.image.source":   source,
				"org.opencontainers.image.version":  o.version,
				"org.opencontainers.image.revision": o.revision,
				"org.opencontainers.image.title":    "imo",
			},
		},
		RootFS:  v1.RootFS{Type: "layers", DiffIDs: []v1.Hash{diffID}},
		History: []v1.History{{Created: v1.Time{Time: created}, CreatedBy: "go run ./build/image", Comment: "a static imo and the CA certificates"}},
	}
	rawConfig, err := json.Marshal(cf)
	if err != nil {
		return platformImage{}, err
	}
	config := newBlob(types.OCIConfigJSON, rawConfig)
	rawManifest, err := json.Marshal(v1.Manifest{SchemaVersion: 2, MediaType: types.OCIManifestSchema1,
		Config: config.Descriptor, Layers: []v1.Descriptor{layer.Descriptor}})
	if err != nil {
		return platformImage{}, err
	}
	manifest := newBlob(types.OCIManifestSchema1, rawManifest)
	manifest.Platform = p
	return platformImage{platform: platform, binarySize: int64(len(exe)), layer: layer, config: config, manifest: manifest}, nil
}

// writeArchive writes the images, under one index, as an OCI image layout
// in a tar at path: oci-layout, index.json naming the index by tag, then
// every blob, sorted by digest. It returns the index's digest.
func writeArchive(ctx context.Context, path, tag string, images []platformImage) (v1.Hash, error) {
	idx := v1.IndexManifest{SchemaVersion: 2, MediaType: types.OCIImageIndex}
	var blobs []blob
	for _, img := range images {
		idx.Manifests = append(idx.Manifests, img.manifest.Descriptor)
		blobs = append(blobs, img.layer, img.config, img.manifest)
	}
	rawIndex, err := json.Marshal(idx)
	if err != nil {
		return v1.Hash{}, err
	}
	index := newBlob(types.OCIImageIndex, rawIndex)
	blobs = append(blobs, index)
	top := index.Descriptor
	top.Annotations = map[string]string{archive.RefNameAnnotation: tag}
	layout, err := json.Marshal(v1.IndexManifest{SchemaVersion: 2, MediaType: types.OCIImageIndex, Manifests: []v1.Descriptor{top}})
	if err != nil {
		return v1.Hash{}, err
	}
	files := []file{
		{archive.LayoutFile, 0o644, []byte(`{"imageLayoutVersion":"1.0.0"}`)},
		{archive.IndexFile, 0o644, layout},
	}
	for _, b := range blobs {
		files = append(files, file{archive.BlobName(b.Digest), 0o644, b.data})
	}
	tarball, err := layerTar(files, time.Unix(0, 0).UTC())
	if err != nil {
		return v1.Hash{}, err
	}
	out, err := outfile.Open(ctx, path)
	if err != nil {
		return v1.Hash{}, err
	}
	defer out.Abort()
	if _, err := out.Write(tarball); err != nil {
		return v1.Hash{}, fmt.Errorf("writing %s: %w", path, err)
	}
	return index.Digest, out.Commit()
}
