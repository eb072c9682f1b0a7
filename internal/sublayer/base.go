package sublayer

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
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
// spooled to one file in a temporary directory, and so is the index: memory
// holds neither, whatever the number and size of the files. A distinct
// content is spooled once (unless it comes again after more than
// recentMax others), so disk holds at most the uncompressed size of the
// layers added.
//
// A Base is safe for concurrent use, but layers must be added before
// [Encode] or [Apply] use it.
type Base struct {
	dir string

	mu       sync.Mutex
	spool    *os.File
	spooled  int64
	layers   []string
	layerSet map[string]bool

	// The index: logs of contentRec and pathRec records, appended as
	// layers are read, and the tables sorted from them on first use
	// (nil until then, and again after a layer is added).
	contentLog, pathLog *os.File
	logged              [2]int64 // bytes in contentLog and pathLog
	contents, paths     *table
	recent              map[[32]byte]span // contents spooled lately
}

// recentMax is how many contents a Base remembers to spool each once.
const recentMax = 1 << 11

// Index records: a content's sha256, where it is spooled and the layer
// that first had it; a path's sha256 and its content's sha256.
const (
	contentRecSize = keySize + 24
	pathRecSize    = keySize + 32 + 8
)

func contentRec(sum [32]byte, s span) []byte {
	r := make([]byte, contentRecSize)
	copy(r, sum[:])
	binary.LittleEndian.PutUint64(r[32:], uint64(s.off))
	binary.LittleEndian.PutUint64(r[40:], uint64(s.size))
	binary.LittleEndian.PutUint64(r[48:], uint64(s.layer))
	return r
}

func parseContentRec(r []byte) span {
	return span{
		off:   int64(binary.LittleEndian.Uint64(r[32:])),
		size:  int64(binary.LittleEndian.Uint64(r[40:])),
		layer: int(binary.LittleEndian.Uint64(r[48:])),
	}
}

// pathRec records that name has the content sum, or, when removed, that a
// later layer removed it.
func pathRec(name string, sum [32]byte, removed bool) []byte {
	r := make([]byte, pathRecSize)
	key := sha256.Sum256([]byte(name))
	copy(r, key[:])
	copy(r[32:], sum[:])
	if removed {
		r[64] = 1
	}
	return r
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
	b := &Base{dir: d, layerSet: map[string]bool{}, recent: map[[32]byte]span{}}
	for _, f := range []struct {
		name string
		to   **os.File
	}{{"contents", &b.spool}, {"contents.log", &b.contentLog}, {"paths.log", &b.pathLog}} {
		if *f.to, err = os.Create(path.Join(d, f.name)); err != nil {
			b.Close()
			return nil, fmt.Errorf("creating spool file: %w", err)
		}
	}
	return b, nil
}

// AddLayer reads one base layer, gzip- or zstd-compressed or an
// uncompressed tar (told apart by magic bytes), and indexes its regular
// files. id names the layer in deltas, normally its blob digest; when id is
// a sha256 digest, the bytes read must have it. Layers must be added in the
// order of the image, so that a path's content is the one of the topmost
// layer that has it. A layer whose id was added before is skipped.
//
// On error the Base does not hold the layer: it must not be used to apply
// deltas that need it.
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
	b.invalidate()
	ix := &baseIndexer{
		ctx:         ctx,
		b:           b,
		layer:       len(b.layers),
		buf:         make([]byte, 256<<10),
		contents:    bufio.NewWriterSize(&offsetWriter{f: b.contentLog, off: b.logged[0]}, 32<<10),
		paths:       bufio.NewWriterSize(&offsetWriter{f: b.pathLog, off: b.logged[1]}, 32<<10),
		contentsLen: b.logged[0],
		pathsLen:    b.logged[1],
	}
	spooled, logged := b.spooled, b.logged
	err = b.addLayer(ix, rc, tee, h, id)
	if err == nil {
		err = ix.contents.Flush()
	}
	if err == nil {
		err = ix.paths.Flush()
	}
	if err != nil {
		// Forget what this layer brought, so that no delta refers to it.
		b.spooled, b.logged = spooled, logged
		clear(b.recent)
		b.spool.Truncate(spooled)
		b.contentLog.Truncate(logged[0])
		b.pathLog.Truncate(logged[1])
		return err
	}
	b.logged = [2]int64{ix.contentsLen, ix.pathsLen}
	b.layers = append(b.layers, id)
	b.layerSet[id] = true
	return nil
}

func (b *Base) addLayer(ix *baseIndexer, rc, raw io.Reader, h hash.Hash, id string) error {
	// Decompress on one goroutine; spool and index on another.
	pipe := newChunkPipe()
	derr := make(chan error, 1)
	go func() {
		_, err := pipe.ReadFrom(rc)
		if err == nil {
			err = pipe.closeWrite()
		} else {
			pipe.stop()
		}
		derr <- err
	}()
	err := scanTar(&pipeReader{p: pipe}, ix)
	pipe.stop()
	if err := <-derr; err != nil && !errors.Is(err, errPipeClosed) {
		return fmt.Errorf("reading base layer %s: %w", id, err)
	}
	if err != nil {
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

// baseIndexer spools the contents of one base layer and logs its index
// records.
type baseIndexer struct {
	ctx                   context.Context
	b                     *Base
	layer                 int
	buf                   []byte
	contents, paths       *bufio.Writer
	contentsLen, pathsLen int64 // log sizes once flushed
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
	if s, ok := b.recent[sum]; ok && s.size == size {
		// Already spooled: the next content overwrites these bytes.
		if err := b.spool.Truncate(off); err != nil {
			return err
		}
	} else {
		s := span{off: off, size: size, layer: ix.layer}
		if len(b.recent) >= recentMax {
			clear(b.recent)
		}
		b.recent[sum] = s
		b.spooled += size
		if _, err := ix.contents.Write(contentRec(sum, s)); err != nil {
			return err
		}
		ix.contentsLen += contentRecSize
	}
	rec := pathRec(name, sum, false)
	if dir, file := path.Split(name); strings.HasPrefix(file, ".wh.") {
		rec = pathRec(dir+strings.TrimPrefix(file, ".wh."), [32]byte{}, true)
	}
	if _, err := ix.paths.Write(rec); err != nil {
		return err
	}
	ix.pathsLen += pathRecSize
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
	b.invalidate()
	var err error
	for _, f := range []*os.File{b.spool, b.contentLog, b.pathLog} {
		if f != nil {
			if cerr := f.Close(); err == nil {
				err = cerr
			}
		}
	}
	if rerr := os.RemoveAll(b.dir); err == nil {
		err = rerr
	}
	return err
}

// invalidate drops the sorted tables, to be built again on the next
// lookup.
func (b *Base) invalidate() {
	for _, t := range []**table{&b.contents, &b.paths} {
		if *t != nil {
			(*t).close()
			*t = nil
		}
	}
}

// tables sorts the logs into tables if they are not yet.
func (b *Base) tables() error {
	if b.contents != nil {
		return nil
	}
	c, err := buildTable(b.dir, b.contentLog, b.logged[0]/contentRecSize, contentRecSize, keep{})
	if err != nil {
		return err
	}
	p, err := buildTable(b.dir, b.pathLog, b.logged[1]/pathRecSize, pathRecSize, keep{last: true, drop: func(r []byte) bool { return r[64] != 0 }})
	if err != nil {
		c.close()
		return err
	}
	b.contents, b.paths = c, p
	return nil
}

// lookup returns where a content is spooled. A failure to read the index
// counts as not found.
func (b *Base) lookup(sum [32]byte) (span, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.lookupLocked(sum)
}

func (b *Base) lookupLocked(sum [32]byte) (span, bool) {
	if b.tables() != nil {
		return span{}, false
	}
	var rec [contentRecSize]byte
	if ok, err := b.contents.find(sum[:], rec[:]); !ok || err != nil {
		return span{}, false
	}
	return parseContentRec(rec[:]), true
}

// atPath returns the content at a path in the base.
func (b *Base) atPath(name string) ([32]byte, span, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	var sum [32]byte
	if b.tables() != nil {
		return sum, span{}, false
	}
	key := sha256.Sum256([]byte(name))
	var rec [pathRecSize]byte
	if ok, err := b.paths.find(key[:], rec[:]); !ok || err != nil {
		return sum, span{}, false
	}
	copy(sum[:], rec[32:64])
	s, ok := b.lookupLocked(sum)
	return sum, s, ok
}

// reader returns a reader of a spooled content.
func (b *Base) reader(s span) *io.SectionReader {
	return io.NewSectionReader(b.spool, s.off, s.size)
}

// readAt reads len(p) spooled bytes at off.
func (b *Base) readAt(p []byte, off int64) error {
	n, err := b.spool.ReadAt(p, off)
	if n == len(p) {
		return nil
	}
	if err == nil || err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return fmt.Errorf("reading spooled contents: %w", err)
}

// tempFile creates a scratch file in the spool directory.
func (b *Base) tempFile(pattern string) (*os.File, error) {
	return os.CreateTemp(b.dir, pattern)
}
