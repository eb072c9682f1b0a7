package volume

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"

	"github.com/imokit/imo/archive"
	"github.com/klauspost/reedsolomon"
	"golang.org/x/sync/errgroup"
)

// PartialSuffix ends the name of a volume being written; the volume takes
// its own name only when the whole set is written.
const PartialSuffix = ".partial"

// Writer writes an archive as a volume set. The archive's bytes go to
// WriteAt, in any order: each lands in its place in a data volume's
// payload, so nothing is copied twice, and ReadAt reads them back. Commit
// then hashes every piece, computes the parity volumes and gives every
// volume its name; until then the volumes are named with [PartialSuffix],
// and a set that was not committed can be resumed: Create opens the
// partial volumes an earlier attempt kept as they are.
type Writer struct {
	s    *split
	vols []*outVolume // the data volumes, then the parity volumes
}

// outVolume is a volume being written.
type outVolume struct {
	h      *Header
	l      *volumeLayout
	path   string // its name once written
	f      *os.File
	hashes *pieceHashes // a data volume's pieces, hashed as written
}

// Create plans the volume set of the archive laid out by l, in volumes of
// at most size bytes and with parity parity volumes, named after out (see
// [Names]) in out's directory, and creates its volumes, or opens the ones
// an earlier attempt left.
func Create(l *archive.Layout, out string, size int64, parity int) (*Writer, error) {
	s, err := newSplit(l.Size(), l.Entries(), l.PlanBytes(), l.Signature(), size, parity)
	if err != nil {
		return nil, err
	}
	dataNames, parityNames := Names(out, s.data, s.parity)
	w := &Writer{s: s}
	add := func(kind string, number int, path string) error {
		h := s.header(kind, number)
		vl, err := s.layout(h)
		if err != nil {
			return err
		}
		f, err := os.OpenFile(path+PartialSuffix, os.O_RDWR|os.O_CREATE, 0o644)
		if err != nil {
			return fmt.Errorf("creating %s: %w", h.Title(), err)
		}
		w.vols = append(w.vols, &outVolume{h: h, l: vl, path: path, f: f, hashes: newPieceHashes(s.piece, h.Size)})
		if _, err := f.WriteAt(vl.prefix, 0); err != nil {
			return fmt.Errorf("writing %s: %w", path+PartialSuffix, err)
		}
		return nil
	}
	for n, p := range dataNames {
		if err := add(KindData, n+1, p); err != nil {
			w.Abort()
			return nil, err
		}
	}
	for n, p := range parityNames {
		if err := add(KindParity, n+1, p); err != nil {
			w.Abort()
			return nil, err
		}
	}
	return w, nil
}

// Paths are the names the volumes take, data volumes first.
func (w *Writer) Paths() []string {
	out := make([]string, len(w.vols))
	for i, v := range w.vols {
		out[i] = v.path
	}
	return out
}

// WriteAt writes p at off in the archive: into the payloads of the data
// volumes that hold those bytes.
func (w *Writer) WriteAt(p []byte, off int64) (int, error) {
	written := 0
	for len(p) > 0 {
		if off < 0 || off >= w.s.archiveSize {
			return written, fmt.Errorf("writing %d bytes at %d: beyond the archive's %d bytes", len(p), off, w.s.archiveSize)
		}
		v := w.vols[off/w.s.stride]
		within := off - v.h.Offset
		n := int(min(int64(len(p)), v.h.Size-within))
		if _, err := v.f.WriteAt(p[:n], v.l.payloadAt+within); err != nil {
			return written, fmt.Errorf("writing %s: %w", v.f.Name(), err)
		}
		v.hashes.wrote(p[:n], within)
		written += n
		p, off = p[n:], off+int64(n)
	}
	return written, nil
}

// ReadAt reads back the archive's bytes at off, from the data volumes'
// payloads.
func (w *Writer) ReadAt(p []byte, off int64) (int, error) {
	read := 0
	for len(p) > 0 {
		if off < 0 || off >= w.s.archiveSize {
			return read, io.EOF
		}
		v := w.vols[off/w.s.stride]
		within := off - v.h.Offset
		n := int(min(int64(len(p)), v.h.Size-within))
		m, err := v.f.ReadAt(p[:n], v.l.payloadAt+within)
		read += m
		switch {
		case errors.Is(err, io.EOF):
			return read, io.EOF // a volume shorter than it should be: what it lacks was never written
		case err != nil:
			return read, fmt.Errorf("reading %s: %w", v.f.Name(), err)
		}
		p, off = p[n:], off+int64(n)
	}
	return read, nil
}

// Salt names how the set stores the archive, for a resumable write's
// journal: a set of another volume size or parity is another layout.
func (w *Writer) Salt() string {
	return fmt.Sprintf("volumes %d %d", w.s.size, w.s.parity)
}

// Commit finishes the set once the whole archive is written: it hashes
// every piece of every data volume, computes the parity volumes stripe by
// stripe, writes each volume's sums and gives the volumes their names.
// Memory holds one stripe: a piece of every volume. Like a single archive's
// write, it does not fsync: the renames are atomic against the process
// failing, and durability against power loss is left to the file system
// (imo verify checks a set before it is trusted).
func (w *Writer) Commit(ctx context.Context) error {
	sums, err := w.sumsAndParity(ctx)
	if err != nil {
		return err
	}
	for i, v := range w.vols {
		if err := v.finish(sums[i]); err != nil {
			return err
		}
	}
	for _, v := range w.vols {
		if err := os.Rename(v.path+PartialSuffix, v.path); err != nil {
			return fmt.Errorf("naming %s: %w", v.path, err)
		}
	}
	return nil
}

// Keep closes the volumes of a set that was not committed, and keeps them
// for a later attempt to resume.
func (w *Writer) Keep() {
	for _, v := range w.vols {
		if v.f != nil {
			v.f.Close()
			v.f = nil
		}
	}
}

// Abort closes and removes the volumes of a set that was not committed.
func (w *Writer) Abort() {
	for _, v := range w.vols {
		if v.f != nil {
			v.f.Close()
			os.Remove(v.path + PartialSuffix)
		}
	}
}

// finish writes the volume's tail, sums and tar trailer, and closes it.
func (v *outVolume) finish(sums []byte) error {
	f := v.f
	tail := append(append([]byte{}, v.l.tail...), sums...)
	tail = append(tail, padding(int64(len(sums)))...)
	tail = append(tail, make([]byte, 1024)...)
	if _, err := f.WriteAt(tail, v.l.payloadAt+v.h.Size); err != nil {
		return fmt.Errorf("writing %s: %w", f.Name(), err)
	}
	if err := f.Truncate(v.l.total); err != nil { // an earlier attempt's may be longer
		return fmt.Errorf("writing %s: %w", f.Name(), err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("writing %s: %w", f.Name(), err)
	}
	v.f = nil
	return nil
}

// sumsAndParity reads the data volumes back stripe by stripe, hashing each
// piece not hashed as it was written, and computing and writing the parity
// pieces; it returns every volume's sums. Without parity, only the pieces
// not yet hashed are read.
func (w *Writer) sumsAndParity(ctx context.Context) ([][]byte, error) {
	s := w.s
	shards := make([][]byte, len(w.vols))
	for i := range shards {
		shards[i] = make([]byte, s.piece)
	}
	sums := make([][]byte, len(w.vols))
	for i, v := range w.vols {
		sums[i] = make([]byte, 0, v.h.Pieces()*sumLine)
	}
	var enc reedsolomon.Encoder
	if s.parity > 0 {
		var err error
		if enc, err = reedsolomon.New(s.data, s.parity); err != nil {
			return nil, fmt.Errorf("parity of %d data and %d parity volumes: %w", s.data, s.parity, err)
		}
	}
	stripes := int((s.stride + s.piece - 1) / s.piece)
	for j := range stripes {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		at := int64(j) * s.piece
		n := min(s.piece, s.stride-at) // the stripe's length
		stripe := make([][]byte, len(shards))
		for i := range shards {
			stripe[i] = shards[i][:n]
		}
		eg := errgroup.Group{}
		eg.SetLimit(runtime.GOMAXPROCS(0))
		for d, v := range w.vols[:s.data] {
			if at >= v.h.Size {
				if enc != nil {
					clear(stripe[d])
				}
				continue
			}
			sum, hashed := v.hashes.sum(j)
			if hashed && enc == nil {
				sums[d] = appendHex(sums[d], sum)
				continue
			}
			eg.Go(func() error {
				m := min(n, v.h.Size-at)
				if _, err := v.f.ReadAt(stripe[d][:m], v.l.payloadAt+at); err != nil {
					return fmt.Errorf("reading %s back: %w", v.f.Name(), err)
				}
				clear(stripe[d][m:])
				if !hashed {
					sum = sha256.Sum256(stripe[d][:m])
				}
				sums[d] = appendHex(sums[d], sum)
				return nil
			})
		}
		if err := eg.Wait(); err != nil {
			return nil, err
		}
		if enc == nil {
			continue
		}
		if err := enc.Encode(stripe); err != nil {
			return nil, fmt.Errorf("computing parity: %w", err)
		}
		for p, v := range w.vols[s.data:] {
			i := s.data + p
			eg.Go(func() error {
				if _, err := v.f.WriteAt(stripe[i], v.l.payloadAt+at); err != nil {
					return fmt.Errorf("writing %s: %w", v.f.Name(), err)
				}
				sums[i] = appendHex(sums[i], sha256.Sum256(stripe[i]))
				return nil
			})
		}
		if err := eg.Wait(); err != nil {
			return nil, err
		}
	}
	return sums, nil
}

// appendHex appends a piece's sums line.
func appendHex(sums []byte, sum [sha256.Size]byte) []byte {
	return append(hex.AppendEncode(sums, sum[:]), '\n')
}

var _ io.WriterAt = (*Writer)(nil)
