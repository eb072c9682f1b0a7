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
	"slices"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/imokit/imo/archive"
)

// layoutMarker is the oci-layout file of a new layout.
const layoutMarker = `{"imageLayoutVersion":"1.0.0"}`

// Create opens dir as a layout to write to: the layout it holds, or, when
// dir does not exist or is an empty directory, a new layout with no image.
// It holds a lock on the layout until Close (where the system has one:
// Unix), waiting while another imo writes to it, so that pushes into one
// layout follow one another. A directory that holds anything but a layout,
// or a file in the way, is refused. Whatever Create or the writes after it
// add, [Layout.Undo] removes.
func Create(ctx context.Context, dir string) (l *Layout, err error) {
	if fi, err := os.Stat(dir); err == nil && !fi.IsDir() {
		return nil, fmt.Errorf("%w: oci:%s is a file, not a directory", ErrInvalid, dir)
	}
	created := false
	if err := os.Mkdir(dir, 0o755); err == nil {
		created = true
	} else if !errors.Is(err, fs.ErrExist) {
		return nil, fmt.Errorf("creating OCI layout %s: %w", dir, err)
	}
	defer func() {
		if err != nil && created {
			os.RemoveAll(dir)
		}
	}()
	unlock, err := lockDir(ctx, dir)
	if err != nil {
		return nil, fmt.Errorf("locking OCI layout %s: %w", dir, err)
	}
	defer func() {
		if err != nil {
			unlock()
		}
	}()
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("opening OCI layout %s: %w", dir, err)
	}
	if len(entries) > 0 {
		if l, err = Open(dir); err != nil {
			return nil, err
		}
		l.unlock = unlock
		return l, nil
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		return nil, fmt.Errorf("opening OCI layout %s: %w", dir, err)
	}
	l = &Layout{dir: dir, root: root, index: &v1.IndexManifest{SchemaVersion: 2, MediaType: types.OCIImageIndex, Manifests: []v1.Descriptor{}},
		unlock: unlock, created: created}
	l.made = append(l.made, archive.LayoutFile)
	if err := root.WriteFile(archive.LayoutFile, []byte(layoutMarker), 0o644); err != nil {
		l.Undo()
		root.Close()
		return nil, fmt.Errorf("creating OCI layout %s: %w", dir, err)
	}
	l.made = append(l.made, archive.IndexFile)
	if err := l.writeIndex(); err != nil {
		l.Undo()
		root.Close()
		return nil, err
	}
	return l, nil
}

// Undo removes what Create and the writes since wrote: the blobs, the
// directories made for them, and, for a layout Create made, its files (and
// its directory, when it made that too), leaving dir as it was.
func (l *Layout) Undo() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.created {
		os.RemoveAll(l.dir)
		l.made = nil
		return
	}
	for _, name := range slices.Backward(l.made) {
		l.root.Remove(name)
	}
	l.made = nil
}

// record notes that name was written, for Undo.
func (l *Layout) record(name string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.made = append(l.made, name)
}

// WriteBlob writes the blob desc names from r, a reader that checks its
// bytes against desc as the blob readers of this module do (failing at the
// latest at its end when they do not match), into a temporary file that
// takes the blob's name only once it is whole and on disk. A blob the
// layout holds already is not written again.
func (l *Layout) WriteBlob(ctx context.Context, desc v1.Descriptor, r io.Reader) (err error) {
	if has, err := l.Has(desc); err != nil || has {
		return err
	}
	name := archive.BlobName(desc.Digest)
	if err := l.mkdirs(path.Dir(name)); err != nil {
		return fmt.Errorf("writing %s into %s: %w", desc.Digest, l.Name(), err)
	}
	tmp, err := l.tempFile(path.Dir(name))
	if err != nil {
		return fmt.Errorf("writing %s into %s: %w", desc.Digest, l.Name(), err)
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
		l.record(name)
		err = l.root.Rename(tmp.Name(), name)
	}
	if err != nil {
		return fmt.Errorf("writing %s into %s: %w", desc.Digest, l.Name(), err)
	}
	return nil
}

// mkdirs makes dir and its parents in the layout, recording each it makes.
func (l *Layout) mkdirs(dir string) error {
	if dir == "." {
		return nil
	}
	if fi, err := l.root.Stat(dir); err == nil && fi.IsDir() {
		return nil
	}
	if err := l.mkdirs(path.Dir(dir)); err != nil {
		return err
	}
	err := l.root.Mkdir(dir, 0o755)
	switch {
	case err == nil:
		l.record(dir)
	case errors.Is(err, fs.ErrExist): // another blob's writer made it
	default:
		return err
	}
	return nil
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

// SetImages adds images to index.json, every blob of which must already be
// in the layout, and replaces index.json with the result atomically (a
// temporary file renamed over it). An image named (by its
// org.opencontainers.image.ref.name) as an entry already there takes that
// entry's place; an image without a name replaces an entry of the same
// digest without one; every other entry is kept.
func (l *Layout) SetImages(images []v1.Descriptor) error {
	kept := []v1.Descriptor{}
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

// writeIndex writes l.index as index.json, atomically. Once the new file
// has taken the name, the write has happened: a failure to make the rename
// durable (a directory sync, which some systems do not offer) is not an
// error, for the caller would then undo writes the new index names.
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
	if d, err := os.Open(l.dir); err == nil {
		d.Sync()
		d.Close()
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
