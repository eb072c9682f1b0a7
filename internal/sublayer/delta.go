package sublayer

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"hash"
	"io"
	"math/bits"
	"os"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/klauspost/compress/zstd"
)

// magic starts every delta: a name and the format version.
const magic = "imo-sublayer\x00\x01"

const (
	opEnd     = 0x00
	opRaw     = 0x01
	opRef     = 0x02
	opPatch   = 0x03
	opLiteral = 0x04

	maxChunk     = 1 << 20
	maxHeader    = 1 << 20
	maxPatchSize = 64 << 20 // largest base file or target file patched
	dictID       = 1
)

// Header is the self-describing start of a delta. It tells the applying
// side which blob the delta rebuilds and which base layers it needs before
// anything is fetched.
type Header struct {
	// Digest and Size are those of the compressed layer blob rebuilt.
	Digest v1.Hash `json:"digest"`
	Size   int64   `json:"size"`
	// DiffID and TarSize are those of the uncompressed layer tar.
	DiffID  v1.Hash `json:"diffID"`
	TarSize int64   `json:"tarSize"`
	// Recipe recompresses the tar into the blob.
	Recipe Recipe `json:"recipe"`
	// Bases are the ids (blob digests) of the base layers whose contents
	// the delta references, in the order they were added to the [Base].
	Bases []string `json:"bases"`
}

// Stats describes an encoded delta.
type Stats struct {
	// Header is the delta's header.
	Header Header
	// DeltaSize is the size of the whole delta stream.
	DeltaSize int64
	// Files counts regular files with contents; Referenced, Patched and
	// Literal count how each was carried.
	Files, Referenced, Patched, Literal int
	// RawBytes are the tar bytes outside file contents; ReferencedBytes,
	// PatchedBytes and LiteralBytes the content bytes carried each way;
	// PatchBytes the size of the patches.
	RawBytes, ReferencedBytes, PatchedBytes, LiteralBytes, PatchBytes int64
}

// ReadHeader reads the magic and header at the start of a delta, leaving r
// at the start of the body.
func ReadHeader(r io.Reader) (*Header, error) {
	m := make([]byte, len(magic))
	if _, err := io.ReadFull(r, m); err != nil {
		return nil, fmt.Errorf("%w: reading magic: %v", ErrFormat, err)
	}
	if string(m) != magic {
		return nil, fmt.Errorf("%w: bad magic", ErrFormat)
	}
	n, err := binary.ReadUvarint(byteReader{r})
	if err != nil || n > maxHeader {
		return nil, fmt.Errorf("%w: bad header length", ErrFormat)
	}
	p := make([]byte, n)
	if _, err := io.ReadFull(r, p); err != nil {
		return nil, fmt.Errorf("%w: reading header: %v", ErrFormat, err)
	}
	var h Header
	if err := json.Unmarshal(p, &h); err != nil {
		return nil, fmt.Errorf("%w: decoding header: %v", ErrFormat, err)
	}
	if h.DiffID.Algorithm != "sha256" || len(h.DiffID.Hex) != 64 || h.TarSize < 0 || h.Size < 0 || h.TarSize > 1<<50 {
		return nil, fmt.Errorf("%w: header lacks diffID or sizes", ErrFormat)
	}
	return &h, nil
}

// byteReader reads one byte at a time without buffering ahead, so that r
// stays at the end of what was parsed.
type byteReader struct{ r io.Reader }

func (b byteReader) ReadByte() (byte, error) {
	var p [1]byte
	_, err := io.ReadFull(b.r, p[:])
	return p[0], err
}

func writeHeader(w io.Writer, h *Header) (int64, error) {
	p, err := json.Marshal(h)
	if err != nil {
		return 0, err
	}
	buf := append([]byte(magic), binary.AppendUvarint(nil, uint64(len(p)))...)
	buf = append(buf, p...)
	n, err := w.Write(buf)
	return int64(n), err
}

// Encode writes a delta of layer against base to w. layer is the layer as
// a tar, gzip or zstd stream (told apart by magic bytes); h gives the
// Digest, Size and Recipe of the compressed blob, and Encode fills in
// DiffID, TarSize and Bases. The body is staged in a file in the base's
// spool directory so that the header can name the base layers used.
//
// Encode does not check that the recipe reproduces the blob; [Prepare]
// does the whole check.
func Encode(ctx context.Context, base *Base, h Header, layer io.Reader, w io.Writer) (Stats, error) {
	rc, err := decompress(layer)
	if err != nil {
		return Stats{}, fmt.Errorf("decompressing layer: %w", err)
	}
	defer rc.Close()

	body, err := base.tempFile("delta-body-")
	if err != nil {
		return Stats{}, err
	}
	defer os.Remove(body.Name())
	defer body.Close()

	bw := bufio.NewWriterSize(body, 256<<10)
	zw, err := zstd.NewWriter(bw, zstd.WithEncoderLevel(zstd.SpeedDefault), zstd.WithEncoderConcurrency(1))
	if err != nil {
		return Stats{}, err
	}
	e := &encoder{
		ctx:  ctx,
		base: base,
		w:    zw,
		tar:  sha256.New(),
		used: map[int]bool{},
	}
	defer e.close()
	if err := scanTar(io.TeeReader(rc, e.tar), e); err != nil {
		return Stats{}, fmt.Errorf("encoding layer: %w", err)
	}
	if err := e.flushRaw(); err != nil {
		return Stats{}, err
	}
	if _, err := zw.Write([]byte{opEnd}); err != nil {
		return Stats{}, err
	}
	if err := zw.Close(); err != nil {
		return Stats{}, err
	}
	if err := bw.Flush(); err != nil {
		return Stats{}, err
	}

	h.DiffID = v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(e.tar.Sum(nil))}
	h.TarSize = e.stats.RawBytes + e.stats.ReferencedBytes + e.stats.PatchedBytes + e.stats.LiteralBytes
	if h.Recipe.Encoder == EncoderNone && h.Digest == (v1.Hash{}) {
		h.Digest, h.Size = h.DiffID, h.TarSize
	}
	if h.Digest.Algorithm != "sha256" || len(h.Digest.Hex) != 64 {
		return Stats{}, fmt.Errorf("encoding layer: header lacks the blob's sha256 digest")
	}
	h.Bases = []string{}
	for i, id := range base.Layers() {
		if e.used[i] {
			h.Bases = append(h.Bases, id)
		}
	}
	n, err := writeHeader(w, &h)
	if err != nil {
		return Stats{}, err
	}
	if _, err := body.Seek(0, io.SeekStart); err != nil {
		return Stats{}, err
	}
	m, err := io.Copy(w, body)
	if err != nil {
		return Stats{}, err
	}
	e.stats.Header = h
	e.stats.DeltaSize = n + m
	return e.stats, nil
}

// encoder is the tarVisitor that writes delta operations.
type encoder struct {
	ctx   context.Context
	base  *Base
	w     io.Writer
	tar   hash.Hash
	used  map[int]bool
	stats Stats

	pending []byte // raw bytes not yet written
	buf     []byte // scratch for contents
	plain   *zstd.Encoder
}

func (e *encoder) close() {
	if e.plain != nil {
		e.plain.Close()
	}
}

func (e *encoder) raw(p []byte) error {
	e.stats.RawBytes += int64(len(p))
	for len(p) > 0 {
		k := min(len(p), maxChunk-len(e.pending))
		e.pending = append(e.pending, p[:k]...)
		p = p[k:]
		if len(e.pending) == maxChunk {
			if err := e.flushRaw(); err != nil {
				return err
			}
		}
	}
	return nil
}

func (e *encoder) flushRaw() error {
	if len(e.pending) == 0 {
		return nil
	}
	if err := e.ctx.Err(); err != nil {
		return err
	}
	op := binary.AppendUvarint([]byte{opRaw}, uint64(len(e.pending)))
	if _, err := e.w.Write(op); err != nil {
		return err
	}
	if _, err := e.w.Write(e.pending); err != nil {
		return err
	}
	e.pending = e.pending[:0]
	return nil
}

// inMemory is the largest content held in memory while it is hashed;
// larger ones are staged in a scratch file and never patched.
var inMemory int64 = maxPatchSize

func (e *encoder) content(name string, size int64, r io.Reader) error {
	if err := e.ctx.Err(); err != nil {
		return err
	}
	if err := e.flushRaw(); err != nil {
		return err
	}
	e.stats.Files++
	h := sha256.New()
	var (
		data    []byte
		scratch *os.File
	)
	if size <= inMemory {
		if int64(cap(e.buf)) < size {
			e.buf = make([]byte, size)
		}
		data = e.buf[:size]
		if _, err := io.ReadFull(r, data); err != nil {
			return fmt.Errorf("reading %s: %w", name, err)
		}
		h.Write(data)
	} else {
		f, err := e.base.tempFile("content-")
		if err != nil {
			return err
		}
		defer os.Remove(f.Name())
		defer f.Close()
		if _, err := io.Copy(io.MultiWriter(f, h), r); err != nil {
			return fmt.Errorf("reading %s: %w", name, err)
		}
		scratch = f
	}
	var sum [32]byte
	h.Sum(sum[:0])

	if s, ok := e.base.lookup(sum); ok && s.size == size {
		e.used[s.layer] = true
		e.stats.Referenced++
		e.stats.ReferencedBytes += size
		op := append([]byte{opRef}, sum[:]...)
		op = binary.AppendUvarint(op, uint64(size))
		_, err := e.w.Write(op)
		return err
	}

	if data != nil && size >= 128 {
		if dsum, s, ok := e.base.atPath(name); ok && s.size <= maxPatchSize && s.size >= 128 {
			patched, err := e.tryPatch(data, dsum, s)
			if err != nil || patched {
				return err
			}
		}
	}

	e.stats.Literal++
	e.stats.LiteralBytes += size
	var src io.Reader
	if data != nil {
		src = bytes.NewReader(data)
	} else {
		if _, err := scratch.Seek(0, io.SeekStart); err != nil {
			return err
		}
		src = scratch
	}
	chunk := make([]byte, min(size, maxChunk))
	for left := size; left > 0; {
		k := min(left, maxChunk)
		if _, err := io.ReadFull(src, chunk[:k]); err != nil {
			return err
		}
		op := binary.AppendUvarint([]byte{opLiteral}, uint64(k))
		if _, err := e.w.Write(op); err != nil {
			return err
		}
		if _, err := e.w.Write(chunk[:k]); err != nil {
			return err
		}
		left -= k
	}
	return nil
}

// tryPatch writes a patch operation if a zstd frame with the base file as
// raw dictionary is smaller than data compressed on its own.
func (e *encoder) tryPatch(data []byte, dsum [32]byte, s span) (bool, error) {
	dict, err := e.base.readAll(s)
	if err != nil {
		return false, err
	}
	pe, err := zstd.NewWriter(nil,
		zstd.WithEncoderLevel(zstd.SpeedDefault),
		zstd.WithEncoderConcurrency(1),
		zstd.WithWindowSize(patchWindow(len(dict)+len(data))),
		zstd.WithEncoderDictRaw(dictID, dict))
	if err != nil {
		return false, err
	}
	patch := pe.EncodeAll(data, nil)
	pe.Close()
	if e.plain == nil {
		e.plain, err = zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedDefault), zstd.WithEncoderConcurrency(1))
		if err != nil {
			return false, err
		}
	}
	plain := e.plain.EncodeAll(data, nil)
	if len(patch) >= len(plain) {
		return false, nil
	}
	e.used[s.layer] = true
	e.stats.Patched++
	e.stats.PatchedBytes += int64(len(data))
	e.stats.PatchBytes += int64(len(patch))
	op := append([]byte{opPatch}, dsum[:]...)
	op = binary.AppendUvarint(op, uint64(len(data)))
	op = binary.AppendUvarint(op, uint64(len(patch)))
	if _, err := e.w.Write(op); err != nil {
		return false, err
	}
	_, err = e.w.Write(patch)
	return true, err
}

// patchWindow is the smallest power of two window that lets a frame reach
// back over all of its dictionary.
func patchWindow(n int) int {
	w := 1 << bits.Len(uint(max(n, zstd.MinWindowSize)-1))
	return min(w, zstd.MaxWindowSize)
}

// Apply reads a delta and writes the rebuilt uncompressed tar to w,
// returning the delta's header. The tar's digest is checked at the end:
// on any error, what was written to w must be discarded.
func Apply(ctx context.Context, base *Base, delta io.Reader, w io.Writer) (*Header, error) {
	h, err := ReadHeader(delta)
	if err != nil {
		return nil, err
	}
	return h, applyBody(ctx, base, h, delta, w)
}

// applyBody is Apply after the header has been read.
func applyBody(ctx context.Context, base *Base, h *Header, delta io.Reader, w io.Writer) error {
	var missing []string
	for _, id := range h.Bases {
		if !base.HasLayer(id) {
			missing = append(missing, id)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("%w: base layers %v", ErrMissingBase, missing)
	}
	zr, err := zstd.NewReader(delta,
		zstd.WithDecoderConcurrency(1),
		zstd.WithDecoderMaxWindow(64<<20),
		zstd.WithDecoderMaxMemory(256<<20))
	if err != nil {
		return err
	}
	defer zr.Close()
	d := &decoder{ctx: ctx, base: base, r: bufio.NewReaderSize(zr, 64<<10)}
	tar := sha256.New()
	cw := &countWriter{w: &capWriter{w: io.MultiWriter(w, tar), left: h.TarSize}}
	if err := d.run(cw); err != nil {
		return err
	}
	got := hex.EncodeToString(tar.Sum(nil))
	if got != h.DiffID.Hex || cw.n != h.TarSize {
		return fmt.Errorf("%w: tar is sha256:%s (%d bytes), want %s (%d bytes)", ErrDigestMismatch, got, cw.n, h.DiffID, h.TarSize)
	}
	return nil
}

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// capWriter fails once more than left bytes come, so that a delta cannot
// expand past the tar size its header declares.
type capWriter struct {
	w    io.Writer
	left int64
}

func (c *capWriter) Write(p []byte) (int, error) {
	if int64(len(p)) > c.left {
		return 0, fmt.Errorf("%w: the tar grows past the size the header declares", ErrDigestMismatch)
	}
	c.left -= int64(len(p))
	return c.w.Write(p)
}

type decoder struct {
	ctx  context.Context
	base *Base
	r    *bufio.Reader
	buf  []byte
}

func (d *decoder) uvarint(limit uint64) (uint64, error) {
	n, err := binary.ReadUvarint(d.r)
	if err != nil {
		return 0, fmt.Errorf("%w: %v", ErrFormat, unexpected(err))
	}
	if n > limit {
		return 0, fmt.Errorf("%w: length %d over %d", ErrFormat, n, limit)
	}
	return n, nil
}

func (d *decoder) sum() ([32]byte, error) {
	var s [32]byte
	if _, err := io.ReadFull(d.r, s[:]); err != nil {
		return s, fmt.Errorf("%w: %v", ErrFormat, unexpected(err))
	}
	return s, nil
}

func unexpected(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

func (d *decoder) run(w io.Writer) error {
	for {
		if err := d.ctx.Err(); err != nil {
			return err
		}
		op, err := d.r.ReadByte()
		if err != nil {
			return fmt.Errorf("%w: %v", ErrFormat, unexpected(err))
		}
		switch op {
		case opEnd:
			if _, err := d.r.ReadByte(); err != io.EOF {
				if err == nil {
					return fmt.Errorf("%w: data after end", ErrFormat)
				}
				return fmt.Errorf("%w: %v", ErrFormat, err)
			}
			return nil
		case opRaw, opLiteral:
			n, err := d.uvarint(maxChunk)
			if err != nil {
				return err
			}
			if m, err := io.CopyN(w, d.r, int64(n)); err != nil {
				if m < int64(n) && (err == io.EOF || err == io.ErrUnexpectedEOF) {
					return fmt.Errorf("%w: %v", ErrFormat, io.ErrUnexpectedEOF)
				}
				return err
			}
		case opRef:
			sum, err := d.sum()
			if err != nil {
				return err
			}
			n, err := d.uvarint(1 << 50)
			if err != nil {
				return err
			}
			s, ok := d.base.lookup(sum)
			if !ok || s.size != int64(n) {
				return fmt.Errorf("%w: content sha256:%x (%d bytes)", ErrMissingBase, sum, n)
			}
			if _, err := io.Copy(w, d.base.reader(s)); err != nil {
				return err
			}
		case opPatch:
			if err := d.patch(w); err != nil {
				return err
			}
		default:
			return fmt.Errorf("%w: unknown operation %#x", ErrFormat, op)
		}
	}
}

func (d *decoder) patch(w io.Writer) error {
	sum, err := d.sum()
	if err != nil {
		return err
	}
	n, err := d.uvarint(maxPatchSize)
	if err != nil {
		return err
	}
	m, err := d.uvarint(maxPatchSize + maxPatchSize/8 + 1<<16)
	if err != nil {
		return err
	}
	s, ok := d.base.lookup(sum)
	if !ok {
		return fmt.Errorf("%w: content sha256:%x", ErrMissingBase, sum)
	}
	if s.size > maxPatchSize {
		return fmt.Errorf("%w: patch dictionary of %d bytes", ErrFormat, s.size)
	}
	// Read the patch as it arrives, so that a lying length allocates no
	// more than the bytes actually present.
	var pb bytes.Buffer
	if k, err := io.Copy(&pb, io.LimitReader(d.r, int64(m))); err != nil {
		return err
	} else if k != int64(m) {
		return fmt.Errorf("%w: patch cut short", ErrFormat)
	}
	dict, err := d.base.readAll(s)
	if err != nil {
		return err
	}
	dec, err := zstd.NewReader(nil,
		zstd.WithDecoderConcurrency(1),
		zstd.WithDecoderDictRaw(dictID, dict),
		zstd.WithDecoderMaxWindow(uint64(patchWindow(int(s.size)+int(n)))),
		zstd.WithDecoderMaxMemory(uint64(patchWindow(int(s.size)+int(n)))))
	if err != nil {
		return err
	}
	defer dec.Close()
	if cap(d.buf) < int(n) {
		d.buf = nil
	}
	out, err := dec.DecodeAll(pb.Bytes(), d.buf[:0])
	if err != nil {
		return fmt.Errorf("%w: decoding patch: %v", ErrFormat, err)
	}
	if len(out) != int(n) {
		return fmt.Errorf("%w: patch gives %d bytes, want %d", ErrFormat, len(out), n)
	}
	d.buf = out
	_, err = w.Write(out)
	return err
}
