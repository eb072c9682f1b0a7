package sublayer

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"hash"
	"io"
	"os"
	"path"
	"strings"
	"sync"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// Base holds the uncompressed contents of the base layers that both sides
// of a transfer have, indexed by content sha256 and by path. Contents are
// spooled to one file in a temporary directory, each distinct content once,
// so memory holds only the index and disk at most the uncompressed size of
// the layers added.
//
// A Base is safe for concurrent use, but layers must be added before
// [Encode] or [Apply] use it.
type Base struct {
	dir string

	mu       sync.Mutex
	spool    *os.File
	spooled  int64
	contents map[[32]byte]span
	paths    map[string][32]byte
	layers   []string
	layerSet map[string]bool
}

// span locates one content in the spool file.
type span struct {
	off, size int64
	layer     int // index into Base.layers of the first layer that had it
}

// NewBase returns an empty Base that spools into a new temporary directory
// inside dir ("" means the system's temporary directory). Close removes it.
func NewBase(dir string) (*Base, error) {
	d, err := os.MkdirTemp(dir, "sublayer-base-")
	if err != nil {
		return nil, fmt.Errorf("creating spool directory: %w", err)
	}
	f, err := os.Create(path.Join(d, "contents"))
	if err != nil {
		os.RemoveAll(d)
		return nil, fmt.Errorf("creating spool file: %w", err)
	}
	return &Base{
		dir:      d,
		spool:    f,
		contents: map[[32]byte]span{},
		paths:    map[string][32]byte{},
		layerSet: map[string]bool{},
	}, nil
}

// AddLayer reads one base layer, gzip- or zstd-compressed or an
// uncompressed tar (told apart by magic bytes), and indexes its regular
// files. id names the layer in deltas, normally its blob digest; when id is
// a sha256 digest, the bytes read must have it. Layers must be added in the
// order of the image, so that a path's content is the one of the topmost
// layer that has it. A layer whose id was added before is skipped.
//
// On error the Base may hold part of the layer's contents but does not
// list the layer: it must not be used to apply deltas that need it.
func (b *Base) AddLayer(ctx context.Context, r io.Reader, id string) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.layerSet[id] {
		return nil
	}
	h := sha256.New()
	tee := io.TeeReader(r, h)
	rc, err := decompress(tee)
	if err != nil {
		return fmt.Errorf("decompressing base layer %s: %w", id, err)
	}
	defer rc.Close()
	ix := &baseIndexer{ctx: ctx, b: b, layer: len(b.layers), buf: make([]byte, 256<<10)}
	if err := b.addLayer(ix, rc, tee, h, id); err != nil {
		// Forget what this layer brought, so that no delta refers to it.
		for _, sum := range ix.added {
			delete(b.contents, sum)
		}
		return err
	}
	b.layers = append(b.layers, id)
	b.layerSet[id] = true
	return nil
}

func (b *Base) addLayer(ix *baseIndexer, rc, raw io.Reader, h hash.Hash, id string) error {
	if err := scanTar(rc, ix); err != nil {
		return fmt.Errorf("reading base layer %s: %w", id, err)
	}
	want, err := v1.NewHash(id)
	if err != nil || want.Algorithm != "sha256" {
		return nil
	}
	if _, err := io.Copy(io.Discard, raw); err != nil {
		return fmt.Errorf("reading base layer %s: %w", id, err)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != want.Hex {
		return fmt.Errorf("base layer %s has digest sha256:%s: %w", id, got, ErrDigestMismatch)
	}
	return nil
}

// baseIndexer spools the contents of one base layer.
type baseIndexer struct {
	ctx   context.Context
	b     *Base
	layer int
	buf   []byte
	added [][32]byte
}

func (ix *baseIndexer) raw([]byte) error { return ix.ctx.Err() }

func (ix *baseIndexer) content(name string, size int64, r io.Reader) error {
	if err := ix.ctx.Err(); err != nil {
		return err
	}
	b := ix.b
	off := b.spooled
	h := sha256.New()
	n, err := io.CopyBuffer(io.MultiWriter(h, &offsetWriter{f: b.spool, off: off}), r, ix.buf)
	if err != nil {
		return fmt.Errorf("spooling %s: %w", name, err)
	}
	if n != size {
		return fmt.Errorf("spooling %s: %w", name, io.ErrUnexpectedEOF)
	}
	var sum [32]byte
	h.Sum(sum[:0])
	if _, ok := b.contents[sum]; ok {
		// Already spooled: the next content overwrites these bytes.
		if err := b.spool.Truncate(off); err != nil {
			return err
		}
	} else {
		b.contents[sum] = span{off: off, size: size, layer: ix.layer}
		ix.added = append(ix.added, sum)
		b.spooled += size
	}
	dir, file := path.Split(name)
	if strings.HasPrefix(file, ".wh.") {
		delete(b.paths, dir+strings.TrimPrefix(file, ".wh."))
		return nil
	}
	b.paths[name] = sum
	return nil
}

type offsetWriter struct {
	f   *os.File
	off int64
}

func (w *offsetWriter) Write(p []byte) (int, error) {
	n, err := w.f.WriteAt(p, w.off)
	w.off += int64(n)
	return n, err
}

// Spooled returns the number of content bytes spooled to disk.
func (b *Base) Spooled() int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.spooled
}

// Layers returns the ids of the layers added, in order.
func (b *Base) Layers() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]string(nil), b.layers...)
}

// HasLayer reports whether a layer with this id was added.
func (b *Base) HasLayer(id string) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.layerSet[id]
}

// Close removes the spool directory.
func (b *Base) Close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	err := b.spool.Close()
	if rerr := os.RemoveAll(b.dir); err == nil {
		err = rerr
	}
	return err
}

// lookup returns where a content is spooled.
func (b *Base) lookup(sum [32]byte) (span, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	s, ok := b.contents[sum]
	return s, ok
}

// atPath returns the content at a path in the base.
func (b *Base) atPath(name string) ([32]byte, span, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	sum, ok := b.paths[name]
	if !ok {
		return sum, span{}, false
	}
	s, ok := b.contents[sum]
	return sum, s, ok
}

// reader returns a reader of a spooled content.
func (b *Base) reader(s span) *io.SectionReader {
	return io.NewSectionReader(b.spool, s.off, s.size)
}

// readAll reads a spooled content into memory.
func (b *Base) readAll(s span) ([]byte, error) {
	p := make([]byte, s.size)
	if _, err := b.spool.ReadAt(p, s.off); err != nil {
		return nil, err
	}
	return p, nil
}

// tempFile creates a scratch file in the spool directory.
func (b *Base) tempFile(pattern string) (*os.File, error) {
	return os.CreateTemp(b.dir, pattern)
}
