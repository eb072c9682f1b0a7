// Package layout reads images from an OCI image layout directory, as
// skopeo, buildah, buildx and zot write it: oci-layout, index.json, and
// blobs/sha256/HEX. Every file is read in place, through an [os.Root] so
// that no name in the layout reaches outside it, and every manifest and
// blob is checked against its digest as it is read.
package layout

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"sync"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/imokit/imo/archive"
	"github.com/imokit/imo/internal/graph"
	"github.com/imokit/imo/internal/verify"
)

// ErrInvalid means a directory is not a readable OCI image layout: no
// oci-layout file, or an index.json that is missing or does not parse.
var ErrInvalid = errors.New("invalid OCI image layout")

// ErrBlobNotFound means a layout does not hold a blob an image needs.
var ErrBlobNotFound = errors.New("blob not in the layout")

// Layout is an opened OCI image layout directory. It is safe for
// concurrent use; Close it when done.
type Layout struct {
	dir   string
	root  *os.Root
	index *v1.IndexManifest
	// For a layout opened to write (see Create):
	unlock  func()     // releases the lock on the layout
	created bool       // Create made the directory
	mu      sync.Mutex // guards made
	made    []string   // files and directories written, in order, for Undo
}

// Open opens the layout in dir and reads its index.json.
func Open(dir string) (*Layout, error) {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return nil, fmt.Errorf("opening OCI layout %s: %w", dir, err)
	}
	l := &Layout{dir: dir, root: root}
	if err := l.read(); err != nil {
		root.Close()
		return nil, err
	}
	return l, nil
}

// OpenIfExists opens the layout in dir as [Open] does, or returns nil when
// there is nothing at dir, or an empty directory. A file in the way is
// refused.
func OpenIfExists(dir string) (*Layout, error) {
	entries, err := os.ReadDir(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil, nil
	case err == nil && len(entries) == 0:
		return nil, nil
	case err == nil:
		return Open(dir)
	}
	if fi, serr := os.Stat(dir); serr == nil && !fi.IsDir() {
		return nil, fmt.Errorf("%w: oci:%s is a file, not a directory", ErrInvalid, dir)
	}
	return nil, fmt.Errorf("opening OCI layout %s: %w", dir, err)
}

// read checks oci-layout and reads index.json.
func (l *Layout) read() error {
	var marker struct {
		Version string `json:"imageLayoutVersion"`
	}
	raw, err := l.readSmall(archive.LayoutFile)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return l.invalid("no %s file: not an OCI image layout", archive.LayoutFile)
	case err != nil:
		return err
	case json.Unmarshal(raw, &marker) != nil || marker.Version == "":
		return l.invalid("%s has no imageLayoutVersion", archive.LayoutFile)
	}
	if raw, err = l.readSmall(archive.IndexFile); errors.Is(err, fs.ErrNotExist) {
		return l.invalid("no %s file", archive.IndexFile)
	} else if err != nil {
		return err
	}
	l.index = &v1.IndexManifest{}
	if err := json.Unmarshal(raw, l.index); err != nil {
		return l.invalid("%s does not parse: %v", archive.IndexFile, err)
	}
	if n := len(l.index.Manifests); n > graph.MaxManifests {
		return l.invalid("%s lists %d images, more than the %d allowed", archive.IndexFile, n, graph.MaxManifests)
	}
	return nil
}

// readSmall reads a metadata file of at most graph.MaxManifestSize bytes.
func (l *Layout) readSmall(name string) ([]byte, error) {
	if fi, err := l.root.Stat(name); err == nil && !fi.Mode().IsRegular() { // a FIFO would block the open
		return nil, l.invalid("%s is not a regular file", name)
	}
	f, err := l.root.Open(name)
	if err != nil {
		return nil, fmt.Errorf("reading %s in %s: %w", name, l.Name(), err)
	}
	defer f.Close()
	raw, err := io.ReadAll(io.LimitReader(f, graph.MaxManifestSize+1))
	if err != nil {
		return nil, fmt.Errorf("reading %s in %s: %w", name, l.Name(), err)
	}
	if len(raw) > graph.MaxManifestSize {
		return nil, l.invalid("%s is larger than %d bytes", name, graph.MaxManifestSize)
	}
	return raw, nil
}

func (l *Layout) invalid(format string, args ...any) error {
	return fmt.Errorf("%w: %s: %s", ErrInvalid, l.Name(), fmt.Sprintf(format, args...))
}

// Name is what errors call the layout: "oci:" and its directory.
func (l *Layout) Name() string { return "oci:" + l.dir }

// Index is the layout's index.json.
func (l *Layout) Index() *v1.IndexManifest { return l.index }

// Close releases the layout's directory, and its lock when it was opened to
// write.
func (l *Layout) Close() error {
	if l.unlock != nil {
		l.unlock()
	}
	return l.root.Close()
}

// open opens the blob h, checking that it is a regular file of size bytes.
func (l *Layout) open(h v1.Hash, size int64) (*os.File, error) {
	name := archive.BlobName(h)
	fi, err := l.root.Stat(name)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil, fmt.Errorf("%w: %s: %s", ErrBlobNotFound, l.Name(), h)
	case err != nil:
		return nil, fmt.Errorf("reading %s in %s: %w", h, l.Name(), err)
	case !fi.Mode().IsRegular(): // a FIFO would block the open
		return nil, l.invalid("blob %s is not a regular file", h)
	case fi.Size() != size:
		return nil, &verify.MismatchError{Source: l.Name(), Want: h, WantSize: size, GotSize: fi.Size()}
	}
	f, err := l.root.Open(name)
	if err != nil {
		return nil, fmt.Errorf("reading %s in %s: %w", h, l.Name(), err)
	}
	return f, nil
}

// Has reports whether the layout holds the blob desc names: a regular file
// of its size (its bytes are checked when it is read).
func (l *Layout) Has(desc v1.Descriptor) (bool, error) {
	fi, err := l.root.Stat(archive.BlobName(desc.Digest))
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return false, nil
	case err != nil:
		return false, fmt.Errorf("looking for %s in %s: %w", desc.Digest, l.Name(), err)
	}
	return fi.Mode().IsRegular() && fi.Size() == desc.Size, nil
}

// Manifest returns the exact bytes of the manifest desc names, checked
// against desc.
func (l *Layout) Manifest(ctx context.Context, desc v1.Descriptor) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if desc.Size > graph.MaxManifestSize {
		return nil, fmt.Errorf("%w: manifest %s in %s declares %d bytes, more than the %d allowed", graph.ErrInvalidManifest, desc.Digest, l.Name(), desc.Size, graph.MaxManifestSize)
	}
	f, err := l.open(desc.Digest, desc.Size)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	raw := make([]byte, desc.Size)
	if _, err := io.ReadFull(f, raw); err != nil {
		return nil, fmt.Errorf("reading %s in %s: %w", desc.Digest, l.Name(), err)
	}
	return raw, verify.Bytes(raw, desc, l.Name())
}

// Blob streams the blob desc names, verified against desc as it is read.
// report, when not nil, is told the running byte count.
func (l *Layout) Blob(_ context.Context, desc v1.Descriptor, report func(int64)) (io.ReadCloser, error) {
	f, err := l.open(desc.Digest, desc.Size)
	if err != nil {
		return nil, err
	}
	r, err := verify.NewReader(f, desc, l.Name(), report)
	if err != nil {
		f.Close()
		return nil, err
	}
	return struct {
		io.Reader
		io.Closer
	}{r, f}, nil
}

// BlobFrom streams the bytes of the blob desc names from byte off to its
// end, unverified, for a writer that checks them with the ones before off.
// report, when not nil, is told the running byte count, off included.
func (l *Layout) BlobFrom(_ context.Context, desc v1.Descriptor, off int64, report func(int64)) (io.ReadCloser, error) {
	if off < 0 || off > desc.Size {
		return nil, fmt.Errorf("blob %s of %s: offset %d is outside its %d bytes", desc.Digest, l.Name(), off, desc.Size)
	}
	f, err := l.open(desc.Digest, desc.Size)
	if err != nil {
		return nil, err
	}
	return struct {
		io.Reader
		io.Closer
	}{verify.Progress(io.NewSectionReader(f, off, desc.Size-off), off, report), f}, nil
}
