package archive

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

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/imokit/imo/internal/graph"
	"github.com/imokit/imo/internal/reference"
	"github.com/imokit/imo/internal/verify"
)

// ErrInvalid means an archive is not a readable OCI image layout in a tar:
// a bad entry, a missing or malformed index.json, a manifest that is absent
// or does not parse.
var ErrInvalid = errors.New("invalid archive")

// MaxMetadataSize bounds index.json, imo.json and every manifest read from
// an archive, so a hostile archive cannot make a reader allocate at will.
const MaxMetadataSize = graph.MaxManifestSize

// MaxHeldBy bounds how many repositories an archive names for one blob as
// where an inventory saw it: a pull records at most that many, and a
// reader ignores the rest.
const MaxHeldBy = 64

// readSeekerAt is what reading an archive needs: a file or an in-memory copy.
type readSeekerAt interface {
	io.ReaderAt
	io.ReadSeeker
}

// tarEntry is where a regular file's bytes sit in the archive.
type tarEntry struct {
	offset, size int64
}

// Reader is an opened archive: every regular file indexed by name, and its
// index.json and imo.json read. It reads blobs in place, verified, and is
// safe for concurrent use. Close it when done.
type Reader struct {
	name    string
	r       io.ReaderAt
	closer  io.Closer
	entries map[string]tarEntry
	index   *v1.IndexManifest
	plan    *Plan  // imo.json; nil for archives written by other tools
	planRaw []byte // imo.json's bytes, as signed
	heldBy  map[v1.Hash][]string
	deltas  map[v1.Hash]*PlanDelta
}

// Open opens and indexes the archive at path, refusing it (with an error
// wrapping [ErrInvalid]) if it could not have come from an image layout:
// compressed, truncated, links, devices, absolute or ".." names,
// duplicates, missing oci-layout or index.json, or an imo.json that names
// blobs or deltas it does not carry.
func Open(path string) (*Reader, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("opening archive: %w", err)
	}
	a, err := read(path, f)
	if err != nil {
		f.Close()
		return nil, err
	}
	a.closer = f
	return a, nil
}

// NewReader opens and indexes, as [Open] does, the archive held in the
// first size bytes of r, such as a volume set reassembled on the fly;
// errors call it name. Close closes r when r is an [io.Closer].
func NewReader(name string, r io.ReaderAt, size int64) (*Reader, error) {
	a, err := read(name, io.NewSectionReader(r, 0, size))
	if err != nil {
		return nil, err
	}
	if c, ok := r.(io.Closer); ok {
		a.closer = c
	}
	return a, nil
}

// Spool reads an archive from r, such as standard input, into a temporary
// file in dir, and opens it as [Open] does; errors call it name. The file
// is removed from dir as soon as it is created, so that nothing is left
// behind however the process ends; Close releases its space.
func Spool(ctx context.Context, r io.Reader, dir, name string) (*Reader, error) {
	f, err := os.CreateTemp(dir, "imo-spool-*.tar")
	if err != nil {
		return nil, fmt.Errorf("spooling %s: %w", name, err)
	}
	os.Remove(f.Name())
	if _, err := io.Copy(f, contextReader{ctx: ctx, r: r}); err != nil {
		f.Close()
		return nil, fmt.Errorf("spooling %s: %w", name, err)
	}
	a, err := read(name, f)
	if err != nil {
		f.Close()
		return nil, err
	}
	a.closer = f
	return a, nil
}

// contextReader stops reading once ctx is done.
type contextReader struct {
	ctx context.Context
	r   io.Reader
}

func (c contextReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

// Close releases the archive's file.
func (a *Reader) Close() error {
	if a.closer == nil {
		return nil
	}
	return a.closer.Close()
}

// read indexes the tar in r (without reading blob bodies) and reads its
// metadata files. name is used in errors.
func read(name string, r readSeekerAt) (*Reader, error) {
	a := &Reader{name: name, r: r, entries: map[string]tarEntry{}, heldBy: map[v1.Hash][]string{}, deltas: map[v1.Hash]*PlanDelta{}}
	if err := a.indexTar(r); err != nil {
		return nil, err
	}
	if err := a.readLayout(); err != nil {
		return nil, err
	}
	if _, ok := a.entries[PlanFile]; ok {
		raw, err := a.readSmall(PlanFile)
		if err != nil {
			return nil, err
		}
		a.plan, a.planRaw = &Plan{}, raw
		if err := json.Unmarshal(raw, a.plan); err != nil {
			return nil, a.invalid("%s does not parse: %v", PlanFile, err)
		}
		if err := a.readPlan(); err != nil {
			return nil, err
		}
	}
	return a, nil
}

// readLayout reads oci-layout and index.json.
func (a *Reader) readLayout() error {
	if _, ok := a.entries[LayoutFile]; !ok {
		if a.dockerArchive() {
			return a.notDockerArchive()
		}
		return a.invalid("no %s file: not an OCI image layout", LayoutFile)
	}
	var layout struct {
		Version string `json:"imageLayoutVersion"`
	}
	if err := a.readJSON(LayoutFile, &layout); err != nil {
		return err
	}
	if layout.Version == "" {
		return a.invalid("%s has no imageLayoutVersion", LayoutFile)
	}
	if _, ok := a.entries[IndexFile]; !ok {
		return a.invalid("no %s file", IndexFile)
	}
	a.index = &v1.IndexManifest{}
	if err := a.readJSON(IndexFile, a.index); err != nil {
		return err
	}
	switch n := len(a.index.Manifests); {
	case n == 0:
		return a.invalid("%s lists no image", IndexFile)
	case n > graph.MaxManifests:
		return a.invalid("%s lists %d images, more than the %d allowed", IndexFile, n, graph.MaxManifests)
	}
	return nil
}

// readPlan checks imo.json against the archive's entries and indexes what
// it says of blobs left out.
func (a *Reader) readPlan() error {
	if s := a.plan.Signer; s != "" && !isFingerprint(s) {
		return a.invalid("%s names the signer %q, which is not a key fingerprint", PlanFile, s)
	}
	for k, b := range a.plan.Blobs {
		if b.Included && !a.Has(b.Digest) {
			return a.invalid("%s says it carries %s, but it does not: the archive is truncated", PlanFile, b.Digest)
		}
		b.HeldBy = b.HeldBy[:min(len(b.HeldBy), MaxHeldBy)]
		a.plan.Blobs[k].HeldBy = b.HeldBy
		for _, r := range b.HeldBy {
			if !reference.RepositoryPath(r) {
				return a.invalid("%s: blob %s is held by %q, which is not a repository path", PlanFile, b.Digest, r)
			}
		}
		if len(b.HeldBy) > 0 {
			a.heldBy[b.Digest] = b.HeldBy
		}
		if b.Delta != nil {
			e, ok := a.entries[DeltaName(b.Digest)]
			if !ok || e.size != b.Delta.Size {
				return a.invalid("%s says %s is carried as a delta of %d bytes, but %s is missing or of another size: the archive is truncated", PlanFile, b.Digest, b.Delta.Size, DeltaName(b.Digest))
			}
			if len(b.Delta.Bases) > graph.MaxManifests {
				return a.invalid("%s: the delta of %s lists %d base layers", PlanFile, b.Digest, len(b.Delta.Bases))
			}
			a.deltas[b.Digest] = b.Delta
		}
	}
	return nil
}

func (a *Reader) invalid(format string, args ...any) error {
	return fmt.Errorf("%w: %s: %s", ErrInvalid, a.name, fmt.Sprintf(format, args...))
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
// paths with "..", duplicates, and sizes beyond the end of the archive. It
// reads the whole tar before it refuses a link or device, to say when the
// archive is a docker-archive instead.
func (a *Reader) indexTar(r io.ReadSeeker) error {
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
	var refused error // the first entry no image layout has
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
func (a *Reader) dockerArchive() bool {
	_, docker := a.entries[DockerManifestFile]
	_, oci := a.entries[LayoutFile]
	return docker && !oci
}

func (a *Reader) notDockerArchive() error {
	return a.invalid("this is a docker-archive (docker save, skopeo's docker-archive:), not an OCI image layout in a tar: pull from it as docker-archive:FILE")
}

// entryName normalizes a tar entry name, refusing absolute names and names
// that climb out with "..".
func entryName(raw string) (string, error) {
	if strings.HasPrefix(raw, "/") {
		return "", fmt.Errorf("entry %q has an absolute path", raw)
	}
	if slices.Contains(strings.Split(raw, "/"), "..") {
		return "", fmt.Errorf("entry %q contains \"..\"", raw)
	}
	name := path.Clean(raw)
	if name == "." {
		return "", fmt.Errorf("entry %q has an empty name", raw)
	}
	return name, nil
}

// section returns the bytes of the entry name.
func (a *Reader) section(name string) (*io.SectionReader, bool) {
	e, ok := a.entries[name]
	if !ok {
		return nil, false
	}
	return io.NewSectionReader(a.r, e.offset, e.size), true
}

func (a *Reader) readSmall(name string) ([]byte, error) {
	s, ok := a.section(name)
	if !ok {
		return nil, a.invalid("no %s", name)
	}
	if s.Size() > MaxMetadataSize {
		return nil, a.invalid("%s is %d bytes, more than the %d allowed", name, s.Size(), MaxMetadataSize)
	}
	b := make([]byte, s.Size())
	if _, err := io.ReadFull(s, b); err != nil {
		return nil, fmt.Errorf("reading %s from %s: %w", name, a.name, err)
	}
	return b, nil
}

func (a *Reader) readJSON(name string, v any) error {
	b, err := a.readSmall(name)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(b, v); err != nil {
		return a.invalid("%s does not parse: %v", name, err)
	}
	return nil
}

// Name is what errors call the archive: its path, or the name it was
// spooled under.
func (a *Reader) Name() string { return a.name }

// Index is the archive's index.json.
func (a *Reader) Index() *v1.IndexManifest { return a.index }

// Plan is the archive's imo.json as written, or nil for archives written by
// other tools. [Reader.Check] describes any archive.
func (a *Reader) Plan() *Plan { return a.plan }

// Has reports whether the archive carries the blob h.
func (a *Reader) Has(h v1.Hash) bool {
	_, ok := a.entries[BlobName(h)]
	return ok
}

// Manifest returns the exact bytes of the manifest desc names, which the
// archive must carry; the caller checks them against desc.
func (a *Reader) Manifest(ctx context.Context, desc v1.Descriptor) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if !a.Has(desc.Digest) {
		return nil, a.invalid("manifest %s is not in the archive", desc.Digest)
	}
	return a.readSmall(BlobName(desc.Digest))
}

// Blob streams the blob desc names, verified against desc as it is read: a
// wrong size is a [*DigestMismatchError] at once, a wrong digest at the end.
// report, when not nil, is told the running byte count.
func (a *Reader) Blob(_ context.Context, desc v1.Descriptor, report func(int64)) (io.ReadCloser, error) {
	s, ok := a.section(BlobName(desc.Digest))
	if !ok {
		return nil, a.invalid("blob %s is not in the archive", desc.Digest)
	}
	return a.verifiedReport(s, desc, report)
}

// BlobFrom streams the bytes of the blob desc names from byte off to its
// end, unverified, for a writer that checks them with the ones before off.
// report, when not nil, is told the running byte count, off included.
func (a *Reader) BlobFrom(_ context.Context, desc v1.Descriptor, off int64, report func(int64)) (io.ReadCloser, error) {
	s, ok := a.section(BlobName(desc.Digest))
	if !ok {
		return nil, a.invalid("blob %s is not in the archive", desc.Digest)
	}
	if s.Size() != desc.Size {
		return nil, &DigestMismatchError{Source: a.name, Want: desc.Digest, WantSize: desc.Size, GotSize: s.Size()}
	}
	if off < 0 || off > desc.Size {
		return nil, fmt.Errorf("blob %s of %s: offset %d is outside its %d bytes", desc.Digest, a.name, off, desc.Size)
	}
	return io.NopCloser(verify.Progress(io.NewSectionReader(s, off, desc.Size-off), off, report)), nil
}

// verified reads s, checked against desc.
func (a *Reader) verified(s *io.SectionReader, desc v1.Descriptor) (io.ReadCloser, error) {
	return a.verifiedReport(s, desc, nil)
}

func (a *Reader) verifiedReport(s *io.SectionReader, desc v1.Descriptor, report func(int64)) (io.ReadCloser, error) {
	if s.Size() != desc.Size {
		return nil, &DigestMismatchError{Source: a.name, Want: desc.Digest, WantSize: desc.Size, GotSize: s.Size()}
	}
	r, err := verify.NewReader(s, desc, a.name, report)
	return io.NopCloser(r), err
}

// Delta returns how the layer h is carried as a sub-layer delta, and the
// delta's bytes, or nil when it is not.
func (a *Reader) Delta(h v1.Hash) (*PlanDelta, *io.SectionReader) {
	d := a.deltas[h]
	if d == nil {
		return nil, nil
	}
	s, _ := a.section(DeltaName(h)) // read checked that it is there
	return d, s
}

// Deltas are the layers the archive carries as sub-layer deltas, in the
// plan's order.
func (a *Reader) Deltas() []v1.Hash {
	var out []v1.Hash
	if a.plan != nil {
		for _, b := range a.plan.Blobs {
			if a.deltas[b.Digest] != nil && !slices.Contains(out, b.Digest) {
				out = append(out, b.Digest)
			}
		}
	}
	return out
}

// HeldBy are, for a blob left out because an inventory lists it, the
// repositories of the inventoried registry that held it (at most
// MaxHeldBy, each a repository path).
func (a *Reader) HeldBy(h v1.Hash) []string { return a.heldBy[h] }

// ImageName is the reference the archive gives its n-th image: the one
// imo.json records, or else index.json's ref.name annotation.
func (a *Reader) ImageName(n int) string {
	if a.planned() {
		if r := a.plan.Images[n].Final.Reference; r != "" {
			return r
		}
	}
	return a.index.Manifests[n].Annotations[RefNameAnnotation]
}

// Subject is, for an artifact that refers to another image of the archive,
// the digest it refers to, as imo.json records it.
func (a *Reader) Subject(n int) v1.Hash {
	if a.planned() {
		return a.plan.Images[n].Subject
	}
	return v1.Hash{}
}

// planned reports whether imo.json describes each image of index.json.
func (a *Reader) planned() bool {
	return a.plan != nil && len(a.plan.Images) == len(a.index.Manifests)
}
