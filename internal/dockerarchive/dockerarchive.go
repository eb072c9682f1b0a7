// Package dockerarchive reads an image from a tar that docker save,
// skopeo's docker-archive transport or go-containerregistry's tarball
// package wrote: manifest.json, each image's config, and its layers.
//
// Such a tar holds no registry manifest: the one a registry served is not
// kept. So the image read here has a manifest built from what the tar
// keeps, a Docker schema 2 manifest of the config (the same bytes, so the
// same digest, as in the registry) and of the layers as the tar holds
// them: uncompressed, as docker save and skopeo write them
// (application/vnd.docker.image.rootfs.diff.tar, whose digests are the
// config's diff IDs), or gzip-compressed, as go-containerregistry and
// crane write them (the registry's own blobs, hashed once when the tar is
// opened). The manifest digest is therefore not the registry's; two
// docker-archives of related images share layers by diff ID, and an
// uncompressed docker-archive shares no layer with a registry image.
//
// Nothing is copied: each blob is read in place from the tar, checked
// against its digest as it is read.
package dockerarchive

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"slices"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/imokit/imo/archive"
	"github.com/imokit/imo/internal/graph"
	"github.com/imokit/imo/internal/verify"
)

// ErrInvalid means a file is not a readable docker-archive. It is the
// archive package's, as every archive imo reads.
var ErrInvalid = archive.ErrInvalid

// ManifestFile is the docker-archive's list of images.
const ManifestFile = "manifest.json"

// maxLinks bounds how many symbolic links a name is followed through.
const maxLinks = 8

// entry is where a file's bytes sit in the tar, or, for a link, its target.
type entry struct {
	offset, size int64
	link         string
}

// saved is one image of manifest.json.
type saved struct {
	Config   string
	RepoTags []string
	Layers   []string
}

// Image is an image opened from a docker-archive. It is safe for
// concurrent use; Close it when done.
type Image struct {
	name     string
	f        *os.File
	entries  map[string]entry
	manifest []byte
	desc     v1.Descriptor
	blobs    map[v1.Hash]entry
}

// Open opens the image of the docker-archive at path that tag (REPO:TAG,
// as in its manifest.json's RepoTags) names, or its only image when tag is
// empty, and builds its manifest.
func Open(path, tag string) (*Image, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("docker-archive: %w", err)
	}
	img, err := read(f, "docker-archive:"+path, tag)
	if err != nil {
		f.Close()
		return nil, err
	}
	return img, nil
}

func read(f *os.File, where, tag string) (*Image, error) {
	img := &Image{name: where, f: f, entries: map[string]entry{}, blobs: map[v1.Hash]entry{}}
	if err := img.index(); err != nil {
		return nil, err
	}
	raw, err := img.readSmall(ManifestFile)
	if err != nil {
		return nil, err
	}
	var images []saved
	if err := json.Unmarshal(raw, &images); err != nil {
		return nil, img.invalid("%s does not parse: %v", ManifestFile, err)
	}
	s, err := img.pick(images, tag)
	if err != nil {
		return nil, err
	}
	return img, img.build(s)
}

func (img *Image) invalid(format string, args ...any) error {
	return fmt.Errorf("%w: %s: %s", ErrInvalid, img.name, fmt.Sprintf(format, args...))
}

// index records where each file and link of the tar is.
func (img *Image) index() error {
	end, err := img.f.Seek(0, io.SeekEnd)
	if err == nil {
		_, err = img.f.Seek(0, io.SeekStart)
	}
	if err != nil {
		return fmt.Errorf("reading %s: %w", img.name, err)
	}
	tr := tar.NewReader(img.f)
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return img.invalid("not a readable tar: %v", err)
		}
		name := path.Clean(strings.TrimPrefix(hdr.Name, "./"))
		off, err := img.f.Seek(0, io.SeekCurrent)
		if err != nil {
			return fmt.Errorf("reading %s: %w", img.name, err)
		}
		switch hdr.Typeflag {
		case tar.TypeReg:
			if hdr.Size > end-off {
				return img.invalid("entry %q declares %d bytes but only %d remain: the file is truncated", hdr.Name, hdr.Size, end-off)
			}
			img.entries[name] = entry{offset: off, size: hdr.Size}
		case tar.TypeSymlink:
			img.entries[name] = entry{link: path.Join(path.Dir(name), hdr.Linkname)}
		case tar.TypeLink:
			img.entries[name] = entry{link: path.Clean(hdr.Linkname)}
		}
	}
	if _, ok := img.entries[ManifestFile]; !ok {
		if _, oci := img.entries["oci-layout"]; oci {
			return img.invalid("no %s: this is an OCI layout in a tar; read it as oci-archive:", ManifestFile)
		}
		return img.invalid("no %s: not a docker-archive (docker save, skopeo's docker-archive:)", ManifestFile)
	}
	return nil
}

// file finds the file name names, following links.
func (img *Image) file(name string) (entry, error) {
	name = path.Clean(strings.TrimPrefix(name, "./"))
	for range maxLinks {
		e, ok := img.entries[name]
		switch {
		case !ok:
			return entry{}, img.invalid("%s names %q, which it does not hold", ManifestFile, name)
		case e.link == "":
			return e, nil
		}
		name = e.link
	}
	return entry{}, img.invalid("%q: too many links", name)
}

// readSmall reads a metadata file of at most graph.MaxManifestSize bytes.
func (img *Image) readSmall(name string) ([]byte, error) {
	e, err := img.file(name)
	if err != nil {
		return nil, err
	}
	if e.size > graph.MaxManifestSize {
		return nil, img.invalid("%s is larger than %d bytes", name, graph.MaxManifestSize)
	}
	b := make([]byte, e.size)
	if _, err := img.f.ReadAt(b, e.offset); err != nil {
		return nil, fmt.Errorf("reading %s of %s: %w", name, img.name, err)
	}
	return b, nil
}

// pick chooses the image tag names, or the only one.
func (img *Image) pick(images []saved, tag string) (saved, error) {
	var tags []string
	var want name.Reference
	if tag != "" {
		want, _ = name.ParseReference(tag)
	}
	for _, s := range images {
		for _, t := range s.RepoTags {
			tags = append(tags, t)
			if have, err := name.ParseReference(t); err == nil && want != nil && have.Name() == want.Name() {
				return s, nil
			}
		}
	}
	switch {
	case tag == "" && len(images) == 1:
		return images[0], nil
	case len(images) == 0:
		return saved{}, img.invalid("%s lists no image", ManifestFile)
	case tag == "":
		return saved{}, fmt.Errorf("%s holds %d images: name one as docker-archive:FILE:REPO:TAG (it has %s)", img.name, len(images), strings.Join(tags, ", "))
	}
	return saved{}, fmt.Errorf("%s has no image tagged %s: it has %s", img.name, tag, strings.Join(tags, ", "))
}

// build builds the image's manifest from its config and layers.
func (img *Image) build(s saved) error {
	raw, err := img.readSmall(s.Config)
	if err != nil {
		return err
	}
	cf, err := v1.ParseConfigFile(bytes.NewReader(raw))
	if err != nil {
		return img.invalid("config %s does not parse: %v", s.Config, err)
	}
	if len(cf.RootFS.DiffIDs) != len(s.Layers) {
		return img.invalid("config %s lists %d diff IDs for %d layers", s.Config, len(cf.RootFS.DiffIDs), len(s.Layers))
	}
	ch, _, _ := v1.SHA256(bytes.NewReader(raw))
	ce, _ := img.file(s.Config)
	m := v1.Manifest{
		SchemaVersion: 2,
		MediaType:     types.DockerManifestSchema2,
		Config:        v1.Descriptor{MediaType: types.DockerConfigJSON, Size: int64(len(raw)), Digest: ch},
	}
	img.blobs[ch] = ce
	for k, l := range s.Layers {
		e, err := img.file(l)
		if err != nil {
			return err
		}
		desc, err := img.layer(e, cf.RootFS.DiffIDs[k])
		if err != nil {
			return fmt.Errorf("layer %s of %s: %w", l, img.name, err)
		}
		if prev, dup := img.blobs[desc.Digest]; dup && prev != e {
			return img.invalid("layers %q and another have the same digest %s", l, desc.Digest)
		}
		img.blobs[desc.Digest] = e
		m.Layers = append(m.Layers, desc)
	}
	if img.manifest, err = json.Marshal(m); err != nil {
		return err
	}
	h, size, _ := v1.SHA256(bytes.NewReader(img.manifest))
	img.desc = v1.Descriptor{MediaType: types.DockerManifestSchema2, Size: size, Digest: h}
	return nil
}

// layer describes the layer file e, whose diff ID is diffID: an
// uncompressed tar (as docker save writes it) is the blob diffID names; a
// gzip-compressed one (as go-containerregistry and crane write them, the
// registry's own blob) is hashed, once, here.
func (img *Image) layer(e entry, diffID v1.Hash) (v1.Descriptor, error) {
	magic := make([]byte, 2)
	if n, _ := img.f.ReadAt(magic, e.offset); n < 2 || magic[0] != 0x1f || magic[1] != 0x8b {
		return v1.Descriptor{MediaType: types.DockerUncompressedLayer, Size: e.size, Digest: diffID}, nil
	}
	h, size, err := v1.SHA256(io.NewSectionReader(img.f, e.offset, e.size))
	if err != nil {
		return v1.Descriptor{}, err
	}
	return v1.Descriptor{MediaType: types.DockerLayer, Size: size, Digest: h}, nil
}

// Top is the descriptor of the image's built manifest.
func (img *Image) Top() v1.Descriptor { return img.desc }

// Name is what errors call the image: docker-archive: and its path.
func (img *Image) Name() string { return img.name }

// Close closes the tar.
func (img *Image) Close() error { return img.f.Close() }

// Manifest returns the built manifest, when desc names it.
func (img *Image) Manifest(ctx context.Context, desc v1.Descriptor) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if desc.Digest != img.desc.Digest {
		return nil, fmt.Errorf("%s holds no manifest %s", img.name, desc.Digest)
	}
	return slices.Clone(img.manifest), nil
}

// section is the blob desc names.
func (img *Image) section(desc v1.Descriptor) (*io.SectionReader, error) {
	e, ok := img.blobs[desc.Digest]
	switch {
	case !ok:
		return nil, fmt.Errorf("%s holds no blob %s", img.name, desc.Digest)
	case e.size != desc.Size:
		return nil, &verify.MismatchError{Source: img.name, Want: desc.Digest, WantSize: desc.Size, GotSize: e.size}
	}
	return io.NewSectionReader(img.f, e.offset, e.size), nil
}

// Blob streams the config or layer desc names, verified against desc as it
// is read: a layer whose file is not the uncompressed tar its diff ID
// names fails at its end.
func (img *Image) Blob(_ context.Context, desc v1.Descriptor, report func(int64)) (io.ReadCloser, error) {
	s, err := img.section(desc)
	if err != nil {
		return nil, err
	}
	r, err := verify.NewReader(s, desc, img.name, report)
	return io.NopCloser(r), err
}

// BlobFrom streams the bytes of the blob desc names from byte off to its
// end, unverified, for a writer that checks them with the ones before off.
func (img *Image) BlobFrom(_ context.Context, desc v1.Descriptor, off int64, report func(int64)) (io.ReadCloser, error) {
	if off < 0 || off > desc.Size {
		return nil, fmt.Errorf("blob %s of %s: offset %d is outside its %d bytes", desc.Digest, img.name, off, desc.Size)
	}
	s, err := img.section(desc)
	if err != nil {
		return nil, err
	}
	return io.NopCloser(verify.Progress(io.NewSectionReader(s, off, desc.Size-off), off, report)), nil
}
