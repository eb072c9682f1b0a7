package archive

import (
	"archive/tar"
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// Contents is what an archive holds. [Build] lays it out in a fixed order:
// metadata first, so that a reader can act on the archive while it
// streams, and layers last.
type Contents struct {
	// Plan is written as PlanFile; its Blobs say which configs and layers
	// the archive carries (Included), and which as sub-layer deltas.
	Plan *Plan
	// Index is written as IndexFile.
	Index *v1.IndexManifest
	// DockerLoad, when not nil, is written as DockerManifestFile.
	DockerLoad []DockerLoadImage
	// Manifests are every manifest of the images, with their exact bytes,
	// top ones first.
	Manifests []Manifest
	// Local are carried blobs that are already on disk, by digest; every
	// other carried blob is fetched when the archive is written.
	Local map[v1.Hash]File
	// Deltas are the sub-layer deltas of the layers the plan carries as
	// deltas, by the layer's digest.
	Deltas map[v1.Hash]File
	// Sign, when not nil, signs the plan's bytes (see [Sign]): the archive
	// then carries SignatureFile.
	Sign func(plan []byte) ([]byte, error)
}

// Manifest is a manifest and its exact bytes.
type Manifest struct {
	Digest v1.Hash
	Raw    []byte
}

// File is a local file of known size that an archive copies.
type File struct {
	Path string
	Size int64
}

// DockerLoadImage is one image of the manifest.json that docker load reads.
type DockerLoadImage struct {
	Config   string
	RepoTags []string
	Layers   []string
}

// Layout is an archive whose every byte is known but for the contents of
// the blobs it fetches, whose sizes are: each entry's offset is fixed
// before anything is fetched, so that blobs can be fetched in any order and
// written in place. Entries are deterministic: fixed times, owners and
// modes, fixed order.
type Layout struct {
	segs    []segment
	size    int64
	entries []Entry
	plan    []byte
	sig     []byte
}

// Entry is where a file's content sits in an archive.
type Entry struct {
	Name   string
	Offset int64
	Size   int64
}

// segment is a piece of an archive: literal bytes, the content of a blob
// fetched when the archive is written, or a local file's content.
type segment struct {
	off  int64
	lit  []byte
	blob *v1.Descriptor
	file *File
}

var epoch = time.Unix(0, 0).UTC()

// Build lays out an archive of c: oci-layout, imo.json, index.json, the
// docker-load manifest.json when there is one, every manifest, the carried
// configs, then the carried layers, then the sub-layer deltas.
func Build(c Contents) (*Layout, error) {
	l := &Layout{}
	if err := l.file(LayoutFile, []byte(`{"imageLayoutVersion":"1.0.0"}`)); err != nil {
		return nil, err
	}
	plan, err := json.MarshalIndent(c.Plan, "", "  ")
	if err != nil {
		return nil, err
	}
	l.plan = append(plan, '\n')
	if err := l.file(PlanFile, l.plan); err != nil {
		return nil, err
	}
	if c.Sign != nil {
		sig, err := c.Sign(l.plan)
		if err != nil {
			return nil, fmt.Errorf("signing %s: %w", PlanFile, err)
		}
		l.sig = []byte(base64.StdEncoding.EncodeToString(sig))
		if err := l.file(SignatureFile, l.sig); err != nil {
			return nil, err
		}
	}
	if err := l.json(IndexFile, c.Index); err != nil {
		return nil, err
	}
	if c.DockerLoad != nil {
		if err := l.json(DockerManifestFile, c.DockerLoad); err != nil {
			return nil, err
		}
	}
	if err := l.dirs(blobsDir); err != nil {
		return nil, err
	}
	written := map[v1.Hash]bool{}
	for _, m := range c.Manifests {
		written[m.Digest] = true
		if err := l.file(BlobName(m.Digest), m.Raw); err != nil {
			return nil, err
		}
	}
	// Configs before layers, so that a reader has all metadata before the
	// first layer byte.
	for _, config := range []bool{true, false} {
		for _, b := range c.Plan.Blobs {
			if b.Config != config || !b.Included || written[b.Digest] {
				continue
			}
			written[b.Digest] = true
			if err := l.blob(v1.Descriptor{MediaType: b.MediaType, Digest: b.Digest, Size: b.Size}, c.Local); err != nil {
				return nil, err
			}
		}
	}
	if err := l.deltas(c); err != nil {
		return nil, err
	}
	l.literal(make([]byte, 1024)) // the tar trailer: two zero blocks
	return l, nil
}

// deltas adds the sub-layer deltas, in the plan's order.
func (l *Layout) deltas(c Contents) error {
	if len(c.Deltas) == 0 {
		return nil
	}
	if err := l.dirs(DeltasDir); err != nil {
		return err
	}
	for _, b := range c.Plan.Blobs {
		if f, ok := c.Deltas[b.Digest]; ok && b.Delta != nil {
			if err := l.local(DeltaName(b.Digest), f); err != nil {
				return err
			}
		}
	}
	return nil
}

// Size is the archive's size in bytes.
func (l *Layout) Size() int64 { return l.size }

// Entries are the archive's files (not directories), in order: where the
// content of each sits.
func (l *Layout) Entries() []Entry { return l.entries }

// PlanBytes are the exact bytes of the archive's PlanFile.
func (l *Layout) PlanBytes() []byte { return l.plan }

// Signature is the content of the archive's SignatureFile, or nil for an
// archive that is not signed.
func (l *Layout) Signature() []byte { return l.sig }

// Fetched is how many bytes of blobs writing the archive fetches.
func (l *Layout) Fetched() int64 {
	var n int64
	for _, s := range l.segs {
		if s.blob != nil {
			n += s.blob.Size
		}
	}
	return n
}

func (l *Layout) literal(b []byte) {
	if len(b) > 0 {
		l.segs = append(l.segs, segment{off: l.size, lit: b})
		l.size += int64(len(b))
	}
}

func (l *Layout) header(h *tar.Header) error {
	var buf bytes.Buffer
	if err := tar.NewWriter(&buf).WriteHeader(h); err != nil {
		return fmt.Errorf("writing %s: %w", h.Name, err)
	}
	l.literal(buf.Bytes())
	return nil
}

// pad fills an entry of n bytes up to the tar block size.
func (l *Layout) pad(n int64) {
	if r := n % 512; r != 0 {
		l.literal(make([]byte, 512-r))
	}
}

// dirs adds the directory name and its sha256 directory.
func (l *Layout) dirs(name string) error {
	for _, d := range []string{name + "/", name + "/sha256/"} {
		if err := l.header(&tar.Header{Typeflag: tar.TypeDir, Name: d, Mode: 0o755, ModTime: epoch}); err != nil {
			return err
		}
	}
	return nil
}

func (l *Layout) file(name string, content []byte) error {
	if err := l.header(&tar.Header{Typeflag: tar.TypeReg, Name: name, Size: int64(len(content)), Mode: 0o644, ModTime: epoch}); err != nil {
		return err
	}
	l.entries = append(l.entries, Entry{Name: name, Offset: l.size, Size: int64(len(content))})
	l.literal(content)
	l.pad(int64(len(content)))
	return nil
}

func (l *Layout) json(name string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return l.file(name, append(b, '\n'))
}

// blob adds the blob desc: from a local file when local has it, fetched
// otherwise.
func (l *Layout) blob(desc v1.Descriptor, local map[v1.Hash]File) error {
	if f, ok := local[desc.Digest]; ok {
		return l.local(BlobName(desc.Digest), f)
	}
	if err := l.header(&tar.Header{Typeflag: tar.TypeReg, Name: BlobName(desc.Digest), Size: desc.Size, Mode: 0o644, ModTime: epoch}); err != nil {
		return err
	}
	l.entries = append(l.entries, Entry{Name: BlobName(desc.Digest), Offset: l.size, Size: desc.Size})
	l.segs = append(l.segs, segment{off: l.size, blob: &desc})
	l.size += desc.Size
	l.pad(desc.Size)
	return nil
}

// local adds the entry name holding the content of a local file.
func (l *Layout) local(name string, f File) error {
	if err := l.header(&tar.Header{Typeflag: tar.TypeReg, Name: name, Size: f.Size, Mode: 0o644, ModTime: epoch}); err != nil {
		return err
	}
	l.entries = append(l.entries, Entry{Name: name, Offset: l.size, Size: f.Size})
	l.segs = append(l.segs, segment{off: l.size, file: &f})
	l.size += f.Size
	l.pad(f.Size)
	return nil
}
