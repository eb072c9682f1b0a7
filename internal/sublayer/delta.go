package sublayer

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"math/bits"
	"os"
	"slices"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/klauspost/compress/zstd"
)

// magic starts every delta: a name and the format version. Version 2
// (magicV2) adds opPatchRange; an encoder writes it only for deltas that
// hold such an operation, so that every other delta stays readable by
// builds that know only version 1.
const (
	magic   = "imo-sublayer\x00\x01"
	magicV2 = "imo-sublayer\x00\x02"
)

const (
	opEnd        = 0x00
	opRaw        = 0x01
	opRef        = 0x02
	opPatch      = 0x03
	opLiteral    = 0x04
	opPatchRange = 0x05 // version 2

	maxChunk     = 1 << 20
	maxHeader    = 1 << 20
	maxPatchSize = 64 << 20 // largest dictionary or output of an opPatch read
	maxRangeDict = 8 << 20  // largest dictionary of an opPatchRange read
	maxRangeOut  = 4 << 20  // largest output of an opPatchRange read
	dictID       = 1
)

// How the encoder patches a file against the base file at the same path:
// in segments of patchSeg bytes, each a zstd frame whose raw dictionary is
// the whole base file when it has at most patchDict bytes (opPatch) and
// otherwise the patchDict bytes of it around the segment's place
// (opPatchRange). Memory for patches is so bounded on both sides whatever
// the files' sizes, and small dictionaries also match better: zstd's
// tables hold one position per hash, so that a dictionary of many MiB
// loses most of its matches. (On an imo binary rebuilt after a change,
// whole-file dictionaries gave no patch smaller than the file compressed
// alone; these segments give a delta of half that.) Variables for tests.
var (
	patchSeg  = 512 << 10
	patchDict = 1 << 20
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

	// version is the format version of the delta: 2 when it holds an
	// opPatchRange, 1 (or 0, before encoding) otherwise.
	version int
}

// Stats describes an encoded delta.
type Stats struct {
	// Header is the delta's header.
	Header Header
	// DeltaSize is the size of the whole delta stream.
	DeltaSize int64
	// Files counts regular files with contents; Referenced, Patched and
	// Literal count how each was carried (Patched when any segment of the
	// file was).
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
	version := 1
	switch string(m) {
	case magic:
	case magicV2:
		version = 2
	default:
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
	h.version = version
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
	m := magic
	if h.version >= 2 {
		m = magicV2
	}
	buf := append([]byte(m), binary.AppendUvarint(nil, uint64(len(p)))...)
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
	d, err := encode(ctx, base, h, rc, 0)
	if err != nil {
		return Stats{}, err
	}
	defer d.Close()
	if err := d.writeTo(w); err != nil {
		return Stats{}, err
	}
	return d.Stats, nil
}

// encoded is a delta whose body is staged in a file.
type encoded struct {
	Stats
	body     *os.File
	bodySize int64
}

// header returns the delta's magic and header.
func (d *encoded) header() ([]byte, error) {
	var hb bytes.Buffer
	if _, err := writeHeader(&hb, &d.Header); err != nil {
		return nil, err
	}
	return hb.Bytes(), nil
}

// writeTo writes the whole delta to w.
func (d *encoded) writeTo(w io.Writer) error {
	hb, err := d.header()
	if err != nil {
		return err
	}
	if _, err := w.Write(hb); err != nil {
		return err
	}
	_, err = io.Copy(w, io.NewSectionReader(d.body, 0, d.bodySize))
	return err
}

// Close removes the staged body.
func (d *encoded) Close() error {
	err := d.body.Close()
	os.Remove(d.body.Name())
	return err
}

// encode writes the delta of the tar read from tar into a staged body and
// fills in the header; the caller closes the returned body. When limit is
// positive, encode stops with [ErrNotWorthwhile] once the body is more than
// half of limit.
func encode(ctx context.Context, base *Base, h Header, tar io.Reader, limit int64) (*encoded, error) {
	body, err := base.tempFile("delta-body-")
	if err != nil {
		return nil, err
	}
	ok := false
	defer func() {
		if !ok {
			body.Close()
			os.Remove(body.Name())
		}
	}()

	bc := &countWriter{w: body}
	zw := &bodyWriter{base: base, bw: bufio.NewWriterSize(bc, 256<<10)}
	defer zw.discard()
	e := &encoder{
		ctx:   ctx,
		base:  base,
		w:     zw,
		tar:   sha256.New(),
		used:  map[int]bool{},
		body:  bc,
		limit: limit,
	}
	defer e.close()
	if err := scanTar(io.TeeReader(tar, e.tar), e); err != nil {
		if errors.Is(err, ErrNotWorthwhile) {
			return nil, err
		}
		return nil, fmt.Errorf("encoding layer: %w", err)
	}
	if err := e.flushRaw(); err != nil {
		return nil, err
	}
	if _, err := zw.Write([]byte{opEnd}); err != nil {
		return nil, err
	}
	e.release()
	if err := zw.Close(); err != nil {
		return nil, err
	}

	h.DiffID = v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(e.tar.Sum(nil))}
	h.TarSize = e.stats.RawBytes + e.stats.ReferencedBytes + e.stats.PatchedBytes + e.stats.LiteralBytes
	if h.Recipe.Encoder == EncoderNone && h.Digest == (v1.Hash{}) {
		h.Digest, h.Size = h.DiffID, h.TarSize
	}
	if h.Digest.Algorithm != "sha256" || len(h.Digest.Hex) != 64 {
		return nil, fmt.Errorf("encoding layer: header lacks the blob's sha256 digest")
	}
	h.Bases = []string{}
	for i, id := range base.Layers() {
		if e.used[i] {
			h.Bases = append(h.Bases, id)
		}
	}
	h.version = 1
	if e.ranged {
		h.version = 2
	}
	d := &encoded{Stats: e.stats, body: body, bodySize: bc.n}
	d.Header = h
	hb, err := d.header()
	if err != nil {
		return nil, err
	}
	d.DeltaSize = int64(len(hb)) + bc.n
	ok = true
	return d, nil
}

// encoder is the tarVisitor that writes delta operations.
type encoder struct {
	ctx    context.Context
	base   *Base
	w      *bodyWriter
	tar    hash.Hash
	used   map[int]bool
	stats  Stats
	body   *countWriter // the compressed body, as written
	limit  int64
	ranged bool // an opPatchRange was written

	pending  []byte   // raw bytes not yet written
	buf      []byte   // a content held in memory, or a segment of one
	dict     []byte   // a patch's dictionary, or base bytes to compare with
	dictAt   [2]int64 // spool offset and length of what dict holds
	patchOut []byte
	plainOut []byte
	scratch  *os.File      // the staged part of a large content
	pe       *zstd.Encoder // patches
	plain    *zstd.Encoder // segments without dictionary, to compare
}

func (e *encoder) close() {
	e.release()
	if e.scratch != nil {
		e.scratch.Close()
		os.Remove(e.scratch.Name())
	}
}

// release drops the encoder's buffers once every operation is written.
func (e *encoder) release() {
	if e.pe != nil {
		e.pe.Close()
	}
	if e.plain != nil {
		e.plain.Close()
	}
	e.pe, e.plain = nil, nil
	e.buf, e.dict, e.patchOut, e.plainOut, e.pending = nil, nil, nil, nil, nil
	e.dictAt = [2]int64{}
}

// smallBody is the most operations whose body is compressed as version 1
// deltas always were: with the zstd encoder's default window, which they
// fit in. The operations are staged on disk until then, so that no window
// is held while the delta is encoded. Larger bodies are compressed as they
// come with a window of bigWindow bytes: memory stays bounded on both
// sides, and tar headers and whole small files, which make up bodies, gain
// little from a longer reach.
const smallBody = 8 << 20

var bigWindow = 2 << 20

// bodyWriter compresses the operations into the delta's body.
type bodyWriter struct {
	base   *Base
	bw     *bufio.Writer // the body
	stage  *os.File
	sbw    *bufio.Writer // over stage
	staged int64
	zw     *zstd.Encoder // once the body is large
}

func (b *bodyWriter) Write(p []byte) (int, error) {
	if b.zw != nil {
		return b.zw.Write(p)
	}
	if b.staged+int64(len(p)) > smallBody {
		if err := b.compressStaged(zstd.WithWindowSize(bigWindow)); err != nil {
			return 0, err
		}
		return b.zw.Write(p)
	}
	if b.stage == nil {
		f, err := b.base.tempFile("delta-ops-")
		if err != nil {
			return 0, err
		}
		b.stage, b.sbw = f, bufio.NewWriterSize(f, 64<<10)
	}
	n, err := b.sbw.Write(p)
	b.staged += int64(n)
	return n, err
}

// compressStaged starts the encoder with opts and feeds it what is staged.
// Lower memory changes only how the encoder buffers its window, not what
// it writes; nor do the sizes of the writes.
func (b *bodyWriter) compressStaged(opts ...zstd.EOption) error {
	zw, err := zstd.NewWriter(b.bw, append([]zstd.EOption{zstd.WithEncoderLevel(zstd.SpeedDefault), zstd.WithEncoderConcurrency(1), zstd.WithLowerEncoderMem(true)}, opts...)...)
	if err != nil {
		return err
	}
	b.zw = zw
	if b.stage == nil {
		return nil
	}
	if err := b.sbw.Flush(); err != nil {
		return err
	}
	_, err = io.CopyBuffer(writeOnly{nopCloser{zw}}, io.NewSectionReader(b.stage, 0, b.staged), make([]byte, 64<<10))
	b.discard()
	return err
}

// Close writes the end of the body.
func (b *bodyWriter) Close() error {
	if b.zw == nil {
		if err := b.compressStaged(); err != nil {
			return err
		}
	}
	if err := b.zw.Close(); err != nil {
		return err
	}
	return b.bw.Flush()
}

// discard removes the staged operations.
func (b *bodyWriter) discard() {
	if b.stage != nil {
		b.stage.Close()
		os.Remove(b.stage.Name())
		b.stage, b.sbw = nil, nil
	}
}

// check stops the encoding when ctx is done or the delta has grown too
// large to be worth it.
func (e *encoder) check() error {
	if err := e.ctx.Err(); err != nil {
		return err
	}
	if e.limit > 0 && e.body.n*2 > e.limit {
		return fmt.Errorf("%w: the delta passed half of the blob's %d bytes", ErrNotWorthwhile, e.limit)
	}
	return nil
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
	if err := e.check(); err != nil {
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

// inMemory is the largest content held in memory while it is hashed.
// Larger ones are compared, as they stream, with the base file at the same
// path, and staged in a scratch file from the first difference on.
var inMemory int64 = 1 << 20

// buffer returns e.buf resized to n bytes.
func (e *encoder) buffer(n int) []byte {
	if cap(e.buf) < n {
		e.buf = make([]byte, max(n, patchSeg))
	}
	return e.buf[:n]
}

// dictBuffer returns e.dict resized to n bytes, forgetting what it held.
func (e *encoder) dictBuffer(n int) []byte {
	if cap(e.dict) < n {
		e.dict = make([]byte, max(n, patchDict, patchSeg))
	}
	e.dictAt = [2]int64{}
	return e.dict[:n]
}

// source is a content being encoded: all in memory, or a prefix equal to
// spooled base bytes followed by the rest in the scratch file.
type source struct {
	mem     []byte
	base    *Base
	prefix  span
	scratch *os.File
}

// slice returns the n bytes at off, read into buf unless in memory.
func (s *source) slice(off int64, n int, buf []byte) ([]byte, error) {
	if s.mem != nil {
		return s.mem[off : off+int64(n)], nil
	}
	p := buf[:n]
	k := 0
	if off < s.prefix.size {
		k = int(min(int64(n), s.prefix.size-off))
		if err := s.base.readAt(p[:k], s.prefix.off+off); err != nil {
			return nil, err
		}
	}
	if k < n {
		if _, err := s.scratch.ReadAt(p[k:], off+int64(k)-s.prefix.size); err != nil {
			return nil, fmt.Errorf("reading a staged content: %w", err)
		}
	}
	return p, nil
}

func (e *encoder) content(name string, size int64, r io.Reader) error {
	if err := e.check(); err != nil {
		return err
	}
	if err := e.flushRaw(); err != nil {
		return err
	}
	e.stats.Files++
	psum, ps, atPath := e.base.atPath(name)
	src, sum, err := e.stage(name, size, r, ps, atPath)
	if err != nil {
		return err
	}

	if s, ok := e.base.lookup(sum); ok && s.size == size {
		e.used[s.layer] = true
		e.stats.Referenced++
		e.stats.ReferencedBytes += size
		op := append([]byte{opRef}, sum[:]...)
		op = binary.AppendUvarint(op, uint64(size))
		_, err := e.w.Write(op)
		return err
	}
	if atPath && size >= 128 && ps.size >= 128 {
		return e.patch(src, size, psum, ps)
	}
	e.stats.Literal++
	e.stats.LiteralBytes += size
	for off := int64(0); off < size; off += maxChunk {
		k := int(min(size-off, maxChunk))
		p, err := src.slice(off, k, e.buffer(k))
		if err != nil {
			return err
		}
		if err := e.literal(p); err != nil {
			return err
		}
	}
	return nil
}

// stage reads a content of size bytes from r and returns it as a source,
// with its sha256. ps is the base content at the same path, if atPath.
func (e *encoder) stage(name string, size int64, r io.Reader, ps span, atPath bool) (*source, [32]byte, error) {
	var sum [32]byte
	h := sha256.New()
	if size <= inMemory {
		data := e.buffer(int(size))
		if _, err := io.ReadFull(r, data); err != nil {
			return nil, sum, fmt.Errorf("reading %s: %w", name, err)
		}
		h.Write(data)
		h.Sum(sum[:0])
		return &source{mem: data}, sum, nil
	}
	buf := e.buffer(patchSeg)
	same := atPath && ps.size == size
	var prefix, staged int64
	for left := size; left > 0; {
		n := int(min(left, int64(len(buf))))
		if _, err := io.ReadFull(r, buf[:n]); err != nil {
			return nil, sum, fmt.Errorf("reading %s: %w", name, err)
		}
		h.Write(buf[:n])
		left -= int64(n)
		if same {
			cmp := e.dictBuffer(n)
			if err := e.base.readAt(cmp, ps.off+prefix); err != nil {
				return nil, sum, err
			}
			if bytes.Equal(cmp, buf[:n]) {
				prefix += int64(n)
				continue
			}
			same = false
		}
		if e.scratch == nil {
			f, err := e.base.tempFile("content-")
			if err != nil {
				return nil, sum, err
			}
			e.scratch = f
		}
		if _, err := e.scratch.WriteAt(buf[:n], staged); err != nil {
			return nil, sum, fmt.Errorf("staging %s: %w", name, err)
		}
		staged += int64(n)
		if err := e.check(); err != nil {
			return nil, sum, err
		}
	}
	h.Sum(sum[:0])
	return &source{base: e.base, prefix: span{off: ps.off, size: prefix}, scratch: e.scratch}, sum, nil
}

// literal writes one literal operation.
func (e *encoder) literal(p []byte) error {
	op := binary.AppendUvarint([]byte{opLiteral}, uint64(len(p)))
	if _, err := e.w.Write(op); err != nil {
		return err
	}
	_, err := e.w.Write(p)
	return err
}

// patch writes a content of size bytes segment by segment: a patch
// against the base content ps (sha256 psum) where a zstd frame with base
// bytes as raw dictionary is smaller than the segment compressed on its
// own, literal bytes elsewhere.
func (e *encoder) patch(src *source, size int64, psum [32]byte, ps span) error {
	patched := false
	var literal int64
	al := aligner{size: size, baseSize: ps.size}
	for off := int64(0); off < size; off += int64(patchSeg) {
		if err := e.check(); err != nil {
			return err
		}
		n := int(min(int64(patchSeg), size-off))
		seg, err := src.slice(off, n, e.buffer(n))
		if err != nil {
			return err
		}
		doff, dlen, dict, err := al.dict(e, ps, off, seg)
		if err != nil {
			return err
		}
		p, plain, err := e.compress(dict, seg)
		if err != nil {
			return err
		}
		if len(p) >= plain {
			literal += int64(n)
			for q := seg; len(q) > 0; q = q[min(len(q), maxChunk):] {
				if err := e.literal(q[:min(len(q), maxChunk)]); err != nil {
					return err
				}
			}
			continue
		}
		patched = true
		e.used[ps.layer] = true
		e.stats.PatchedBytes += int64(n)
		e.stats.PatchBytes += int64(len(p))
		var op []byte
		if doff == 0 && dlen == ps.size {
			op = append([]byte{opPatch}, psum[:]...)
		} else {
			e.ranged = true
			op = append([]byte{opPatchRange}, psum[:]...)
			op = binary.AppendUvarint(op, uint64(doff))
			op = binary.AppendUvarint(op, uint64(dlen))
		}
		op = binary.AppendUvarint(op, uint64(n))
		op = binary.AppendUvarint(op, uint64(len(p)))
		if _, err := e.w.Write(op); err != nil {
			return err
		}
		if _, err := e.w.Write(p); err != nil {
			return err
		}
	}
	if patched {
		e.stats.Patched++
	} else {
		e.stats.Literal++
	}
	e.stats.LiteralBytes += literal
	return nil
}

// aligner places the dictionary of each segment of a content patched
// against a base content larger than patchDict: around the base bytes that
// the segment's own bytes are found at, so that code or data that moved
// (a rebuilt binary's, say) is still matched. It starts from the place
// that corresponds to the segment's in proportion to the two sizes, and
// then follows the shift it finds from one segment to the next.
type aligner struct {
	size, baseSize int64
	shift          int64
	found          bool // shift was found, not guessed
}

// anchors is how many samples of a segment are looked for in the base.
const anchors = 6

// dict returns the dictionary for the segment seg at off: its offset and
// length in the base content ps, and its bytes.
func (a *aligner) dict(e *encoder, ps span, off int64, seg []byte) (int64, int64, []byte, error) {
	d, n := int64(patchDict), int64(len(seg))
	if a.baseSize <= d {
		dict, err := e.loadDict(ps.off, a.baseSize)
		return 0, a.baseSize, dict, err
	}
	place := func(at int64) int64 { return max(0, min(at-(d-n)/2, a.baseSize-d)) }
	guesses := []int64{off + a.shift}
	if !a.found {
		guesses[0] = int64(float64(off) / float64(a.size) * float64(a.baseSize))
	} else if prop := int64(float64(off) / float64(a.size) * float64(a.baseSize)); prop != guesses[0] {
		guesses = append(guesses, prop) // where to look when the shift is lost
	}
	for _, at := range guesses {
		start := place(at)
		dict, err := e.loadDict(ps.off+start, d)
		if err != nil {
			return 0, 0, nil, err
		}
		shift, ok := findShift(dict, seg)
		if !ok {
			continue
		}
		a.shift, a.found = start+shift-off, true
		if best := place(off + a.shift); best != start {
			start = best
			if dict, err = e.loadDict(ps.off+start, d); err != nil {
				return 0, 0, nil, err
			}
		}
		return start, d, dict, nil
	}
	// Nothing found, as in new bytes: the first guess will do.
	start := place(guesses[0])
	dict, err := e.loadDict(ps.off+start, d)
	return start, d, dict, err
}

// findShift looks for samples of seg in dict and returns where seg's start
// would be in dict by the samples found, if any: the median of their
// shifts.
func findShift(dict, seg []byte) (int64, bool) {
	const k = 32
	var shifts []int64
	for i := range anchors {
		at := len(seg) * (2*i + 1) / (2 * anchors)
		if at+k > len(seg) {
			break
		}
		a := seg[at : at+k]
		if !varied(a) {
			continue
		}
		j := bytes.Index(dict, a)
		if j < 0 || bytes.Contains(dict[j+1:], a) {
			continue // absent, or not a landmark
		}
		shifts = append(shifts, int64(j-at))
	}
	if len(shifts) == 0 {
		return 0, false
	}
	slices.Sort(shifts)
	return shifts[len(shifts)/2], true
}

// varied reports whether a sample has enough distinct bytes to mark one
// place: runs and padding do not.
func varied(p []byte) bool {
	var seen [256]bool
	n := 0
	for _, c := range p {
		if !seen[c] {
			seen[c] = true
			n++
		}
	}
	return n >= len(p)/3
}

// loadDict returns the n spooled bytes at off.
func (e *encoder) loadDict(off, n int64) ([]byte, error) {
	if e.dictAt == [2]int64{off, n} {
		return e.dict[:n], nil
	}
	d := e.dictBuffer(int(n))
	if err := e.base.readAt(d, off); err != nil {
		return nil, err
	}
	e.dictAt = [2]int64{off, n}
	return d, nil
}

// compress returns seg compressed into a zstd frame with dict as raw
// dictionary, and the size of seg compressed without one. The encoders
// are made once, with windows that reach over a whole dictionary and
// segment, and keep their buffers from one segment to the next.
func (e *encoder) compress(dict, seg []byte) ([]byte, int, error) {
	var err error
	if e.pe == nil {
		e.pe, err = zstd.NewWriter(nil,
			zstd.WithEncoderLevel(zstd.SpeedDefault),
			zstd.WithEncoderConcurrency(1),
			zstd.WithWindowSize(patchWindow(patchDict+patchSeg)),
			zstd.WithLowerEncoderMem(true),
			zstd.WithEncoderDictRaw(dictID, dict))
	} else {
		err = e.pe.ResetWithOptions(nil, zstd.WithEncoderDictRaw(dictID, dict))
	}
	if err != nil {
		return nil, 0, err
	}
	e.patchOut = e.pe.EncodeAll(seg, e.patchOut[:0])
	if e.plain == nil {
		e.plain, err = zstd.NewWriter(nil,
			zstd.WithEncoderLevel(zstd.SpeedDefault),
			zstd.WithEncoderConcurrency(1),
			zstd.WithWindowSize(patchWindow(patchSeg)),
			zstd.WithLowerEncoderMem(true))
		if err != nil {
			return nil, 0, err
		}
	}
	e.plainOut = e.plain.EncodeAll(seg, e.plainOut[:0])
	return e.patchOut, len(e.plainOut), nil
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
	d := &decoder{ctx: ctx, base: base, version: h.version, r: bufio.NewReaderSize(zr, 64<<10), dictBudget: 4*h.TarSize + 256<<20}
	defer d.close()
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
	ctx     context.Context
	base    *Base
	version int
	r       *bufio.Reader

	copyBuf []byte   // for raw, literal and referenced bytes
	patch   []byte   // a patch as read
	out     []byte   // a patch's output
	dict    []byte   // a patch's dictionary
	dictAt  [2]int64 // spool offset and length of what dict holds
	pd      *zstd.Decoder
	// dictBudget is how many more dictionary bytes patches may load: a
	// crafted delta of many empty patches against big dictionaries could
	// otherwise keep a push reading for hours without writing a byte.
	dictBudget int64
}

func (d *decoder) close() {
	if d.pd != nil {
		d.pd.Close()
	}
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

// copy copies n bytes from r to w through the decoder's buffer.
func (d *decoder) copy(w io.Writer, r io.Reader) (int64, error) {
	if d.copyBuf == nil {
		d.copyBuf = make([]byte, 256<<10)
	}
	return io.CopyBuffer(w, r, d.copyBuf)
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
			if m, err := d.copy(w, io.LimitReader(d.r, int64(n))); err != nil {
				return err
			} else if m < int64(n) {
				return fmt.Errorf("%w: %v", ErrFormat, io.ErrUnexpectedEOF)
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
			if _, err := d.copy(w, d.base.reader(s)); err != nil {
				return err
			}
		case opPatch:
			if err := d.applyPatch(w, false); err != nil {
				return err
			}
		case opPatchRange:
			if d.version < 2 {
				return fmt.Errorf("%w: unknown operation %#x", ErrFormat, op)
			}
			if err := d.applyPatch(w, true); err != nil {
				return err
			}
		default:
			return fmt.Errorf("%w: unknown operation %#x", ErrFormat, op)
		}
	}
}

// applyPatch applies an opPatch, or an opPatchRange when ranged.
func (d *decoder) applyPatch(w io.Writer, ranged bool) error {
	sum, err := d.sum()
	if err != nil {
		return err
	}
	var off, dlen uint64
	limit := uint64(maxPatchSize)
	if ranged {
		if off, err = d.uvarint(1 << 50); err != nil {
			return err
		}
		if dlen, err = d.uvarint(maxRangeDict); err != nil {
			return err
		}
		limit = maxRangeOut
	}
	n, err := d.uvarint(limit)
	if err != nil {
		return err
	}
	m, err := d.uvarint(limit + limit/8 + 1<<16)
	if err != nil {
		return err
	}
	if n == 0 || m == 0 {
		return fmt.Errorf("%w: an empty patch", ErrFormat) // the encoder writes none
	}
	s, ok := d.base.lookup(sum)
	if !ok {
		return fmt.Errorf("%w: content sha256:%x", ErrMissingBase, sum)
	}
	if ranged {
		if dlen == 0 || off+dlen > uint64(s.size) {
			return fmt.Errorf("%w: patch dictionary of %d bytes at %d in a content of %d", ErrFormat, dlen, off, s.size)
		}
	} else {
		if s.size > maxPatchSize {
			return fmt.Errorf("%w: patch dictionary of %d bytes", ErrFormat, s.size)
		}
		dlen = uint64(s.size)
	}
	patch, err := d.readPatch(int(m))
	if err != nil {
		return err
	}
	dict, err := d.loadDict(s.off+int64(off), int64(dlen))
	if err != nil {
		return err
	}
	// One decoder serves every patch; its limits are set for each. It
	// decodes into a buffer of exactly n bytes' capacity and no further.
	win := uint64(patchWindow(int(dlen) + int(n)))
	limits := []zstd.DOption{zstd.WithDecoderDictRaw(dictID, dict), zstd.WithDecoderMaxWindow(win), zstd.WithDecoderMaxMemory(win)}
	if d.pd == nil {
		max := uint64(patchWindow(2 * maxPatchSize))
		d.pd, err = zstd.NewReader(nil, zstd.WithDecoderConcurrency(1), zstd.WithDecodeAllCapLimit(true),
			zstd.WithDecoderMaxWindow(max), zstd.WithDecoderMaxMemory(max))
		if err != nil {
			return err
		}
	}
	if err := d.pd.ResetWithOptions(nil, limits...); err != nil {
		return err
	}
	if cap(d.out) < int(n) {
		d.out = make([]byte, 0, n)
	}
	out, err := d.pd.DecodeAll(patch, d.out[:0:n])
	if err != nil {
		return fmt.Errorf("%w: decoding patch: %v", ErrFormat, err)
	}
	if len(out) != int(n) {
		return fmt.Errorf("%w: patch gives %d bytes, want %d", ErrFormat, len(out), n)
	}
	_, err = w.Write(out)
	return err
}

// readPatch reads a patch of m bytes. It grows its buffer as the bytes
// arrive, so that a lying length allocates no more than the bytes present.
func (d *decoder) readPatch(m int) ([]byte, error) {
	p := d.patch[:0]
	for len(p) < m {
		k := min(m-len(p), 1<<20)
		p = slices.Grow(p, k)
		got, err := io.ReadFull(d.r, p[len(p):len(p)+k])
		p = p[:len(p)+got]
		if err != nil {
			d.patch = p
			if err == io.EOF || err == io.ErrUnexpectedEOF {
				return nil, fmt.Errorf("%w: patch cut short", ErrFormat)
			}
			return nil, err
		}
	}
	d.patch = p
	return p, nil
}

// loadDict returns the n spooled bytes at off.
func (d *decoder) loadDict(off, n int64) ([]byte, error) {
	if d.dictAt == [2]int64{off, n} && n > 0 {
		return d.dict[:n], nil
	}
	if d.dictBudget -= n; d.dictBudget < 0 {
		return nil, fmt.Errorf("%w: its patches load more dictionary bytes than four times the layer's tar", ErrFormat)
	}
	if int64(cap(d.dict)) < n {
		d.dict = make([]byte, n)
	}
	d.dictAt = [2]int64{}
	p := d.dict[:n]
	if err := d.base.readAt(p, off); err != nil {
		return nil, err
	}
	d.dictAt = [2]int64{off, n}
	return p, nil
}
