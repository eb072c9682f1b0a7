package layout

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/imokit/imo/archive"
)

// layoutMarker is the oci-layout file of a new layout.
const layoutMarker = `{"imageLayoutVersion":"1.0.0"}`

// Create opens dir as a layout to write to: the layout it holds, or, when
// dir does not exist or is an empty directory, a new layout with no image.
// created says whether it made dir, for a caller that must remove it again
// when it fails. A directory that holds anything but a layout, or a file
// in the way, is refused.
func Create(dir string) (l *Layout, created bool, err error) {
	entries, err := os.ReadDir(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		if err := os.Mkdir(dir, 0o755); err != nil {
			return nil, false, fmt.Errorf("creating OCI layout %s: %w", dir, err)
		}
		created = true
	case err != nil:
		_, err := OpenIfExists(dir) // to say what is in the way
		return nil, false, err
	case len(entries) > 0:
		l, err := Open(dir)
		return l, false, err
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		return nil, created, fmt.Errorf("opening OCI layout %s: %w", dir, err)
	}
	l = &Layout{dir: dir, root: root, index: &v1.IndexManifest{SchemaVersion: 2, MediaType: types.OCIImageIndex}}
	if err := root.WriteFile(archive.LayoutFile, []byte(layoutMarker), 0o644); err != nil {
		root.Close()
		return nil, created, fmt.Errorf("creating OCI layout %s: %w", dir, err)
	}
	if err := l.writeIndex(); err != nil {
		root.Close()
		return nil, created, err
	}
	return l, created, nil
}

// WriteBlob writes the blob desc names from r, a reader that checks its
// bytes against desc as the blob readers of this module do (failing at the
// latest at its end when they do not match), into a temporary file that
// takes the blob's name only once it is whole and on disk. A blob the
// layout holds already is not written again; written says whether this
// call wrote it.
func (l *Layout) WriteBlob(ctx context.Context, desc v1.Descriptor, r io.Reader) (written bool, err error) {
	if has, err := l.Has(desc.Digest); err != nil || has {
		return false, err
	}
	name := archive.BlobName(desc.Digest)
	if err := l.root.MkdirAll(path.Dir(name), 0o755); err != nil {
		return false, fmt.Errorf("writing %s into %s: %w", desc.Digest, l.Name(), err)
	}
	tmp, err := l.tempFile(path.Dir(name))
	if err != nil {
		return false, fmt.Errorf("writing %s into %s: %w", desc.Digest, l.Name(), err)
	}
	defer func() {
		if err != nil {
			l.root.Remove(tmp.Name())
		}
	}()
	_, err = io.Copy(tmp, contextReader{ctx, r})
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = l.root.Rename(tmp.Name(), name)
	}
	if err != nil {
		return false, fmt.Errorf("writing %s into %s: %w", desc.Digest, l.Name(), err)
	}
	return true, nil
}

// tempFile creates a new file in dir (inside the layout) whose name
// (relative to the layout) is its Name.
func (l *Layout) tempFile(dir string) (*relFile, error) {
	for range 10 {
		b := make([]byte, 8)
		rand.Read(b)
		name := path.Join(dir, ".imo-"+hex.EncodeToString(b)+".tmp")
		f, err := l.root.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
		if errors.Is(err, fs.ErrExist) {
			continue
		}
		if err != nil {
			return nil, err
		}
		return &relFile{File: f, name: name}, nil
	}
	return nil, fmt.Errorf("no free temporary name in %s", dir)
}

// relFile is a file with its name relative to the layout.
type relFile struct {
	*os.File
	name string
}

func (f *relFile) Name() string { return f.name }

// RemoveBlob removes the blob h, which a failed push wrote.
func (l *Layout) RemoveBlob(h v1.Hash) error {
	if err := l.root.Remove(archive.BlobName(h)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("removing %s from %s: %w", h, l.Name(), err)
	}
	return nil
}

// SetImages adds images to index.json, every blob of which must already be
// in the layout, and replaces index.json with the result atomically (a
// temporary file renamed over it). An image named (by its
// org.opencontainers.image.ref.name) as an entry already there takes that
// entry's place; an image without a name replaces an entry of the same
// digest without one; every other entry is kept.
func (l *Layout) SetImages(images []v1.Descriptor) error {
	kept := l.index.Manifests[:0:0]
	for _, old := range l.index.Manifests {
		replaced := false
		for _, d := range images {
			on, dn := old.Annotations[archive.RefNameAnnotation], d.Annotations[archive.RefNameAnnotation]
			if on == dn && (on != "" || old.Digest == d.Digest) {
				replaced = true
			}
		}
		if !replaced {
			kept = append(kept, old)
		}
	}
	l.index.Manifests = append(kept, images...)
	return l.writeIndex()
}

// writeIndex writes l.index as index.json, atomically.
func (l *Layout) writeIndex() error {
	if l.index.SchemaVersion == 0 {
		l.index.SchemaVersion = 2
	}
	raw, err := json.Marshal(l.index)
	if err != nil {
		return err
	}
	tmp, err := l.tempFile(".")
	if err != nil {
		return fmt.Errorf("writing %s of %s: %w", archive.IndexFile, l.Name(), err)
	}
	_, err = tmp.Write(raw)
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = l.root.Rename(tmp.Name(), archive.IndexFile)
	}
	if err != nil {
		l.root.Remove(tmp.Name())
		return fmt.Errorf("writing %s of %s: %w", archive.IndexFile, l.Name(), err)
	}
	return syncDir(l.dir)
}

// syncDir makes a rename in dir durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil && !errors.Is(err, os.ErrInvalid) {
		return fmt.Errorf("syncing %s: %w", dir, err)
	}
	return nil
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
