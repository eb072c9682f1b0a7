package imo

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
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// maxMetadataSize bounds index.json, imo.json and every manifest read from
// an archive, so a hostile archive cannot make imo allocate at will.
const maxMetadataSize = 8 << 20

// maxHeldBy bounds how many repositories an archive names for one blob as
// where an inventory saw it (pull records at most that many, and reading
// ignores the rest); vet asks at most heldByTried of them, those under the
// push's target prefix.
const (
	maxHeldBy   = 64
	heldByTried = 16
)

// readSeekerAt is what reading an archive needs: a file or an in-memory copy.
type readSeekerAt interface {
	io.ReaderAt
	io.ReadSeeker
}

// tarEntry is where a regular file's bytes sit in the archive.
type tarEntry struct {
	offset, size int64
}

// archiveFile is an indexed archive: every regular file by name, and the
// parsed OCI index.
type archiveFile struct {
	name    string
	r       io.ReaderAt
	entries map[string]tarEntry
	index   *v1.IndexManifest
	plan    *Plan // imo.json; nil for archives written by other tools
	// heldBy are, for blobs left out because an inventory lists them, the
	// repositories that held them.
	heldBy map[v1.Hash][]string
	// deltas are the layers carried as sub-layer deltas.
	deltas map[v1.Hash]*PlanDelta
}

// openArchive opens and indexes the archive at path, which errors call
// name. The caller closes the returned file.
func openArchive(path, name string) (*archiveFile, io.Closer, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, fmt.Errorf("opening archive: %w", err)
	}
	a, err := readArchive(name, f)
	if err != nil {
		f.Close()
		return nil, nil, err
	}
	return a, f, nil
}

// readArchive indexes the tar in r (without reading blob bodies) and reads
// its metadata files. name is used in errors.
func readArchive(name string, r readSeekerAt) (*archiveFile, error) {
	a := &archiveFile{name: name, r: r, entries: map[string]tarEntry{}}
	if err := a.indexTar(r); err != nil {
		return nil, err
	}
	if _, ok := a.entries[LayoutFile]; !ok {
		if a.dockerArchive() {
			return nil, a.notDockerArchive()
		}
		return nil, a.invalid("no %s file: not an OCI image layout", LayoutFile)
	}
	var layout struct {
		Version string `json:"imageLayoutVersion"`
	}
	if err := a.readJSON(LayoutFile, &layout); err != nil {
		return nil, err
	}
	if layout.Version == "" {
		return nil, a.invalid("%s has no imageLayoutVersion", LayoutFile)
	}
	if _, ok := a.entries[IndexFile]; !ok {
		return nil, a.invalid("no %s file", IndexFile)
	}
	a.index = &v1.IndexManifest{}
	if err := a.readJSON(IndexFile, a.index); err != nil {
		return nil, err
	}
	if len(a.index.Manifests) == 0 {
		return nil, a.invalid("%s lists no image", IndexFile)
	}
	a.heldBy, a.deltas = map[v1.Hash][]string{}, map[v1.Hash]*PlanDelta{}
	if _, ok := a.entries[PlanFile]; ok {
		a.plan = &Plan{}
		if err := a.readJSON(PlanFile, a.plan); err != nil {
			return nil, err
		}
		for k, b := range a.plan.Blobs {
			b.HeldBy = b.HeldBy[:min(len(b.HeldBy), maxHeldBy)]
			a.plan.Blobs[k].HeldBy = b.HeldBy
			for _, r := range b.HeldBy {
				if !repoPath.MatchString(r) {
					return nil, a.invalid("%s: blob %s is held by %q, which is not a repository path", PlanFile, b.Digest, r)
				}
			}
			if len(b.HeldBy) > 0 {
				a.heldBy[b.Digest] = b.HeldBy
			}
			if b.Delta != nil {
				e, ok := a.entries[deltaName(b.Digest)]
				if !ok || e.size != b.Delta.Size {
					return nil, a.invalid("%s says %s is carried as a delta of %d bytes, but %s is missing or of another size: the archive is truncated", PlanFile, b.Digest, b.Delta.Size, deltaName(b.Digest))
				}
				if len(b.Delta.Bases) > maxManifests {
					return nil, a.invalid("%s: the delta of %s lists %d base layers", PlanFile, b.Digest, len(b.Delta.Bases))
				}
				a.deltas[b.Digest] = b.Delta
			}
		}
	}
	return a, nil
}

func (a *archiveFile) invalid(format string, args ...any) error {
	return fmt.Errorf("%w: %s: %s", ErrInvalidArchive, a.name, fmt.Sprintf(format, args...))
}

// compressionMagic names compressed formats by their first bytes.
var compressionMagic = []struct {
	magic []byte
	name  string
}{
	{[]byte{0x1f, 0x8b}, "gzip"},
	{[]byte("BZh"), "bzip2"},
	{[]byte{0x28, 0xb5, 0x2f, 0xfd}, "zstd"},
	{[]byte{0xfd, '7', 'z', 'X', 'Z', 0}, "xz"},
}

// indexTar records where each regular file starts, refusing entries that
// could not have come from an image layout: links, devices, absolute paths,
// paths with "..", duplicates, and sizes beyond the end of the archive.
func (a *archiveFile) indexTar(r io.ReadSeeker) error {
	end, err := r.Seek(0, io.SeekEnd)
	if err != nil {
		return fmt.Errorf("reading archive %s: %w", a.name, err)
	}
	head := make([]byte, 6)
	n, _ := a.r.ReadAt(head, 0)
	for _, c := range compressionMagic {
		if bytes.HasPrefix(head[:n], c.magic) {
			return a.invalid("the archive is %s-compressed; decompress it first", c.name)
		}
	}
	if _, err := r.Seek(0, io.SeekStart); err != nil {
		return fmt.Errorf("reading archive %s: %w", a.name, err)
	}
	tr := tar.NewReader(r)
	var last int64    // where the last entry's content ends, padded to a block
	var refused error // the first entry no image layout has; the rest is read to say what the archive is
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return a.invalid("not a readable tar: %v", err)
		}
		if hdr.Typeflag == tar.TypeXGlobalHeader {
			continue
		}
		name, err := entryName(hdr.Name)
		if err != nil {
			return a.invalid("%v", err)
		}
		off, err := r.Seek(0, io.SeekCurrent)
		if err != nil {
			return fmt.Errorf("reading archive %s: %w", a.name, err)
		}
		last = off + (hdr.Size+511)/512*512
		switch hdr.Typeflag {
		case tar.TypeDir:
			continue
		case tar.TypeReg:
		default:
			if refused == nil {
				refused = a.invalid("entry %q is not a regular file or directory (tar type %q)", hdr.Name, hdr.Typeflag)
			}
			continue
		}
		if hdr.Size > end-off {
			return a.invalid("entry %q declares %d bytes but only %d remain: the archive is truncated", hdr.Name, hdr.Size, end-off)
		}
		if _, dup := a.entries[name]; dup {
			return a.invalid("entry %q appears twice", hdr.Name)
		}
		a.entries[name] = tarEntry{offset: off, size: hdr.Size}
	}
	// A tar ends with two zero blocks; without them it was cut off between
	// two entries, which the tar reader does not notice.
	trailer := make([]byte, 1024)
	if n, _ := a.r.ReadAt(trailer, last); n < len(trailer) || !bytes.Equal(trailer, make([]byte, len(trailer))) {
		return a.invalid("the archive does not end with a tar trailer: it is truncated")
	}
	if refused != nil && a.dockerArchive() {
		return a.notDockerArchive()
	}
	return refused
}

// dockerArchive reports whether the archive looks like what docker save
// and skopeo's docker-archive transport write: a manifest.json and no OCI
// layout.
func (a *archiveFile) dockerArchive() bool {
	_, docker := a.entries[DockerManifestFile]
	_, oci := a.entries[LayoutFile]
	return docker && !oci
}

func (a *archiveFile) notDockerArchive() error {
	return a.invalid("this is a docker-archive (docker save, skopeo's docker-archive:); imo reads OCI image layouts in a tar: convert it with skopeo copy docker-archive:FILE oci-archive:OUT")
}

// entryName normalizes a tar entry name, refusing absolute names and names
// that climb out with "..".
func entryName(raw string) (string, error) {
	if strings.HasPrefix(raw, "/") {
		return "", fmt.Errorf("entry %q has an absolute path", raw)
	}
	for _, part := range strings.Split(raw, "/") {
		if part == ".." {
			return "", fmt.Errorf("entry %q contains \"..\"", raw)
		}
	}
	name := path.Clean(raw)
	if name == "." {
		return "", fmt.Errorf("entry %q has an empty name", raw)
	}
	return name, nil
}

// section returns the bytes of the entry name.
func (a *archiveFile) section(name string) (*io.SectionReader, bool) {
	e, ok := a.entries[name]
	if !ok {
		return nil, false
	}
	return io.NewSectionReader(a.r, e.offset, e.size), true
}

func (a *archiveFile) readSmall(name string) ([]byte, error) {
	s, ok := a.section(name)
	if !ok {
		return nil, a.invalid("no %s", name)
	}
	if s.Size() > maxMetadataSize {
		return nil, a.invalid("%s is %d bytes, more than the %d allowed", name, s.Size(), maxMetadataSize)
	}
	b := make([]byte, s.Size())
	if _, err := io.ReadFull(s, b); err != nil {
		return nil, fmt.Errorf("reading %s from %s: %w", name, a.name, err)
	}
	return b, nil
}

func (a *archiveFile) readJSON(name string, v any) error {
	b, err := a.readSmall(name)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(b, v); err != nil {
		return a.invalid("%s does not parse: %v", name, err)
	}
	return nil
}

// has reports whether the archive carries the blob h.
func (a *archiveFile) has(h v1.Hash) bool {
	_, ok := a.entries[blobName(h)]
	return ok
}

// manifest is the [manifestSource] of the archive.
func (a *archiveFile) manifest(ctx context.Context, d v1.Descriptor) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if !a.has(d.Digest) {
		return nil, a.invalid("manifest %s is not in the archive", d.Digest)
	}
	return a.readSmall(blobName(d.Digest))
}

// blob streams the blob desc names, verified against desc as it is read.
func (a *archiveFile) blob(desc v1.Descriptor, report func(int64)) (io.Reader, error) {
	s, ok := a.section(blobName(desc.Digest))
	if !ok {
		return nil, a.invalid("blob %s is not in the archive", desc.Digest)
	}
	if s.Size() != desc.Size {
		return nil, &DigestMismatchError{Source: a.name, Want: desc.Digest, WantSize: desc.Size, GotSize: s.Size()}
	}
	return newVerifyingReader(s, desc, a.name, report)
}

// images walks every image index.json lists, in its order, and checks
// that the archive carries every blob imo.json says it does.
func (a *archiveFile) images(ctx context.Context) ([]*imageGraph, error) {
	if len(a.index.Manifests) > maxManifests {
		return nil, a.invalid("%s lists %d images, more than the %d allowed", IndexFile, len(a.index.Manifests), maxManifests)
	}
	var gs []*imageGraph
	for _, d := range a.index.Manifests {
		raw, err := a.manifest(ctx, d)
		if err != nil {
			return nil, err
		}
		desc := v1.Descriptor{MediaType: d.MediaType, Digest: d.Digest, Size: d.Size, Platform: d.Platform}
		g, err := walkImage(ctx, manifestNode{desc: desc, raw: raw}, a.manifest, a.name, 1)
		if err != nil {
			if ctx.Err() != nil {
				return nil, err
			}
			return nil, fmt.Errorf("%w: %s: %w", ErrInvalidArchive, a.name, err)
		}
		gs = append(gs, g)
	}
	if a.plan != nil {
		for _, b := range a.plan.Blobs {
			if b.Included && !a.has(b.Digest) {
				return nil, a.invalid("%s says it carries %s, but it does not: the archive is truncated", PlanFile, b.Digest)
			}
		}
	}
	return gs, nil
}

// imageName is the reference the archive gives its n-th image: the one
// imo.json records, or else index.json's ref.name annotation.
func (a *archiveFile) imageName(n int) string {
	if a.plan != nil && len(a.plan.Images) == len(a.index.Manifests) {
		if r := a.plan.Images[n].Final.Reference; r != "" {
			return r
		}
	}
	return a.index.Manifests[n].Annotations[refNameAnnotation]
}

// subject is, for an artifact that refers to another image of the
// archive, the digest it refers to, as imo.json records it.
func (a *archiveFile) subject(n int) v1.Hash {
	if a.plan != nil && len(a.plan.Images) == len(a.index.Manifests) {
		return a.plan.Images[n].Subject
	}
	return v1.Hash{}
}

// describe returns the archive's plan as the archive's contents show it,
// with the base and final references from imo.json where it has them.
func (a *archiveFile) describe(gs []*imageGraph) *Plan {
	planned := a.plan != nil && len(a.plan.Images) == len(gs)
	images := make([]PlanImage, len(gs))
	for n, g := range gs {
		var base ImageRef
		if planned {
			base = a.plan.Images[n].Base
		}
		images[n] = planImage(ImageRef{Reference: a.imageName(n), Digest: g.top().desc.Digest}, base, g)
		images[n].Subject = a.subject(n)
	}
	reasons := map[v1.Hash]string{}
	if planned {
		for _, b := range a.plan.Blobs {
			reasons[b.Digest] = b.Reason
		}
	}
	p := newPlan(images, mergeGraphs(gs), func(b *blobUse) string {
		switch {
		case a.has(b.desc.Digest):
			return ""
		case b.foreign():
			return reasonForeign
		}
		if r := reasons[b.desc.Digest]; r != "" {
			return r
		}
		return "not in archive"
	})
	for k, b := range p.Blobs {
		if !b.Included {
			p.Blobs[k].HeldBy = a.heldBy[b.Digest]
			if d := a.deltas[b.Digest]; d != nil {
				p.Blobs[k].Delta, p.Blobs[k].Reason = d, reasonDelta
			}
		}
	}
	if a.plan != nil {
		p.Inventories, p.Bundle = a.plan.Inventories, a.plan.Bundle
	}
	return p
}

// Inspect reads the archive at path without contacting any registry and
// describes it: the final image, the base it was diffed against (for
// archives imo wrote), and every blob with whether the archive carries it.
// It works on any OCI image layout in a tar, such as skopeo's oci-archive.
func Inspect(ctx context.Context, path string) (*Plan, error) {
	a, c, err := openArchive(path, path)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	gs, err := a.images(ctx)
	if err != nil {
		return nil, err
	}
	return a.describe(gs), nil
}
