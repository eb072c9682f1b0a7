package volume

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/imokit/imo/archive"
	"github.com/klauspost/reedsolomon"
)

// cachedPieces is how many verified or repaired data pieces a Set keeps.
const cachedPieces = 8

// Set is a volume set opened for reading: the archive its data volumes
// hold, read in place through [Set.ReadAt]. Every piece is checked against
// its volume's sums as it is read; a piece that is missing or damaged is
// rebuilt from the same piece of the other volumes and the parity volumes,
// one stripe at a time. It is safe for concurrent use.
type Set struct {
	h       Header      // the set's shared fields, from its first volume
	data    []*inVolume // by number, from 1; nil when missing
	parity  []*inVolume
	ignored []Problem
	enc     reedsolomon.Encoder

	mu    sync.Mutex
	bad   map[pieceKey]bool // pieces found damaged
	cache []cachedPiece     // the latest pieces read, oldest first
	free  [][]byte          // piece buffers to use again

	repair sync.Mutex // one stripe rebuilt at a time
	stripe [][]byte   // a piece of every volume, for rebuilding; under repair
}

// Problem is a file given as a volume that could not serve as one.
type Problem struct {
	Path string
	Err  error
}

// pieceKey names a piece of a volume.
type pieceKey struct {
	kind   string
	number int
	piece  int
}

type cachedPiece struct {
	number, piece int
	b             []byte
}

// inVolume is an opened volume.
type inVolume struct {
	path      string
	f         *os.File
	h         *Header
	payloadAt int64
	sums      [][sha256.Size]byte
}

// IsVolume reports whether the file at path starts as a volume does: a tar
// whose first entry is imo-volume.json.
func IsVolume(path string) bool {
	f, err := os.Open(path)
	if err != nil {
		return false
	}
	defer f.Close()
	hdr, err := tar.NewReader(f).Next()
	return err == nil && hdr.Name == HeaderFile
}

// Open opens a volume set from paths: volume files, in any order, and
// directories, whose volumes are all taken. A single volume file brings
// the other volumes of its set in its directory. Files that are volumes
// but do not read, or belong to no set with the others, are set aside
// ([Set.Ignored]); volumes of several sets, or a file that is not a volume
// at all, are an error.
func Open(paths ...string) (*Set, error) {
	files, err := volumeFiles(paths)
	if err != nil {
		return nil, err
	}
	var vols []*inVolume
	var ignored []Problem
	for _, path := range files {
		v, err := readVolume(path)
		if err != nil {
			ignored = append(ignored, Problem{Path: path, Err: err})
			continue
		}
		vols = append(vols, v)
	}
	if len(vols) == 0 {
		return nil, noVolume(paths, ignored)
	}
	sets := map[string][]string{}
	for _, v := range vols {
		sets[v.h.Set] = append(sets[v.h.Set], v.path)
	}
	if len(sets) > 1 {
		var desc []string
		for id, ps := range sets {
			desc = append(desc, fmt.Sprintf("set %s (%s)", id, strings.Join(ps, ", ")))
		}
		sort.Strings(desc)
		closeAll(vols)
		return nil, fmt.Errorf("%w: the volumes given belong to %d sets: %s", ErrInvalid, len(sets), strings.Join(desc, "; "))
	}
	s := &Set{h: *vols[0].h, bad: map[pieceKey]bool{}, ignored: ignored}
	s.h.Kind, s.h.Number, s.h.Offset, s.h.Size, s.h.Holds = "", 0, 0, 0, nil
	s.data, s.parity = make([]*inVolume, s.h.DataVolumes), make([]*inVolume, s.h.ParityVolumes)
	for _, v := range vols {
		slots := s.data
		if v.h.Kind == KindParity {
			slots = s.parity
		}
		if !sameSet(&s.h, v.h) || v.h.Number < 1 || v.h.Number > len(slots) {
			s.ignored = append(s.ignored, Problem{v.path, fmt.Errorf("%w: its header does not match the other volumes of set %s", ErrInvalid, s.h.Set)})
			v.f.Close()
			continue
		}
		switch other := slots[v.h.Number-1]; {
		case other != nil:
			s.ignored = append(s.ignored, Problem{v.path, fmt.Errorf("another copy of %s (%s), which is used", v.h.Title(), other.path)})
			v.f.Close()
		default:
			slots[v.h.Number-1] = v
		}
	}
	if s.h.ParityVolumes > 0 {
		if s.enc, err = reedsolomon.New(s.h.DataVolumes, s.h.ParityVolumes); err != nil {
			s.Close()
			return nil, fmt.Errorf("parity of set %s: %w", s.h.Set, err)
		}
	}
	return s, nil
}

// volumeFiles expands directories into the volumes they hold, and a single
// volume into its set's volumes beside it.
func volumeFiles(paths []string) ([]string, error) {
	if len(paths) == 0 {
		return nil, errors.New("no volume given")
	}
	var files []string
	seen := map[string]bool{}
	add := func(p string) {
		if abs, err := filepath.Abs(p); err == nil && !seen[abs] {
			seen[abs] = true
			files = append(files, p)
		}
	}
	for _, p := range paths {
		fi, err := os.Stat(p)
		if err != nil {
			return nil, err
		}
		if !fi.IsDir() {
			if !IsVolume(p) {
				return nil, fmt.Errorf("%w: %s is not a volume of an imo volume set (no %s)", ErrInvalid, p, HeaderFile)
			}
			add(p)
			continue
		}
		inDir, err := dirVolumes(p)
		if err != nil {
			return nil, err
		}
		for _, f := range inDir {
			add(f)
		}
	}
	if len(paths) == 1 && len(files) == 1 && files[0] == paths[0] {
		set := setOf(paths[0])
		siblings, err := dirVolumes(filepath.Dir(paths[0]))
		if err != nil {
			return nil, err
		}
		for _, f := range siblings {
			if setOf(f) == set {
				add(f)
			}
		}
	}
	return files, nil
}

// dirVolumes lists the volumes in dir, by name.
func dirVolumes(dir string) ([]string, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, e := range entries {
		p := filepath.Join(dir, e.Name())
		if e.Type().IsRegular() && !strings.HasSuffix(e.Name(), PartialSuffix) && IsVolume(p) {
			out = append(out, p)
		}
	}
	return out, nil
}

// setOf is the set a volume's header names, or "" when it does not read.
func setOf(path string) string {
	v, err := readVolume(path)
	if err != nil {
		return ""
	}
	v.f.Close()
	return v.h.Set
}

func noVolume(paths []string, ignored []Problem) error {
	switch len(ignored) {
	case 0:
		return fmt.Errorf("%w: no volume in %s", ErrInvalid, strings.Join(paths, ", "))
	case 1:
		return ignored[0].Err
	}
	var msgs []string
	for _, p := range ignored {
		msgs = append(msgs, p.Err.Error())
	}
	return fmt.Errorf("%w: none of the %d volumes of %s reads: %s", ErrInvalid, len(ignored), strings.Join(paths, ", "), strings.Join(msgs, "; "))
}

func closeAll(vols []*inVolume) {
	for _, v := range vols {
		v.f.Close()
	}
}

// readVolume opens the volume at path and reads its header, plan and sums.
func readVolume(path string) (v *inVolume, err error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			f.Close()
			err = fmt.Errorf("%w: %s: %w", ErrInvalid, path, err)
		}
	}()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	r := io.NewSectionReader(f, 0, fi.Size())
	tr := tar.NewReader(r)
	next := func(want ...string) (*tar.Header, int64, error) {
		hdr, err := tr.Next()
		if err != nil {
			return nil, 0, fmt.Errorf("reading its entries: %w", err)
		}
		if !slices.Contains(want, hdr.Name) {
			return nil, 0, fmt.Errorf("entry %q where %s belongs", hdr.Name, strings.Join(want, " or "))
		}
		at, err := r.Seek(0, io.SeekCurrent)
		return hdr, at, err
	}
	small := func(hdr *tar.Header, limit int64) ([]byte, error) {
		if hdr.Size > limit {
			return nil, fmt.Errorf("%s is %d bytes, more than %d", hdr.Name, hdr.Size, limit)
		}
		return io.ReadAll(tr)
	}
	hdr, _, err := next(HeaderFile)
	if err != nil {
		return nil, err
	}
	raw, err := small(hdr, maxHeader)
	if err != nil {
		return nil, err
	}
	v = &inVolume{path: path, f: f, h: &Header{}}
	if err := json.Unmarshal(raw, v.h); err != nil {
		return nil, fmt.Errorf("%s does not parse: %w", HeaderFile, err)
	}
	if err := v.h.check(); err != nil {
		return nil, fmt.Errorf("%s: %w", HeaderFile, err)
	}
	if hdr, _, err = next(archive.PlanFile); err != nil {
		return nil, err
	}
	plan, err := small(hdr, archive.MaxMetadataSize)
	if err != nil {
		return nil, err
	}
	if got, _, _ := v1.SHA256(bytes.NewReader(plan)); got != v.h.Plan {
		return nil, fmt.Errorf("its %s is not the plan its header names", archive.PlanFile)
	}
	payload := DataFile
	if v.h.Kind == KindParity {
		payload = ParityFile
	}
	if hdr, v.payloadAt, err = next(archive.SignatureFile, payload); err != nil {
		return nil, err
	}
	if hdr.Name == archive.SignatureFile {
		if hdr, v.payloadAt, err = next(payload); err != nil {
			return nil, err
		}
	}
	if hdr.Size != v.h.Size {
		return nil, fmt.Errorf("its payload is %d bytes, its header says %d", hdr.Size, v.h.Size)
	}
	if hdr.Size > fi.Size()-v.payloadAt {
		return nil, fmt.Errorf("its payload of %d bytes does not fit in the file's %d: the volume is truncated", hdr.Size, fi.Size())
	}
	if hdr, _, err = next(SumsFile); err != nil {
		return nil, err
	}
	if hdr.Size != int64(v.h.Pieces())*sumLine {
		return nil, fmt.Errorf("%s is %d bytes; %d pieces take %d", SumsFile, hdr.Size, v.h.Pieces(), v.h.Pieces()*sumLine)
	}
	text, err := io.ReadAll(tr)
	if err != nil || int64(len(text)) != hdr.Size {
		return nil, fmt.Errorf("reading %s: the volume is truncated (%v)", SumsFile, err)
	}
	v.sums = make([][sha256.Size]byte, v.h.Pieces())
	for j := range v.sums {
		line := text[j*sumLine : (j+1)*sumLine]
		if _, err := hex.Decode(v.sums[j][:], line[:sumLine-1]); err != nil || line[sumLine-1] != '\n' {
			return nil, fmt.Errorf("%s: line %d is not a SHA-256", SumsFile, j+1)
		}
	}
	return v, nil
}

// Close closes the volumes.
func (s *Set) Close() error {
	for _, v := range slices.Concat(s.data, s.parity) {
		if v != nil {
			v.f.Close()
		}
	}
	return nil
}

// ID identifies the set.
func (s *Set) ID() string { return s.h.Set }

// Name is what errors call the set: its first volume's path and its ID.
func (s *Set) Name() string {
	for _, v := range slices.Concat(s.data, s.parity) {
		if v != nil {
			return fmt.Sprintf("%s (volume set %s)", v.path, s.h.Set)
		}
	}
	return "volume set " + s.h.Set
}

// Size is the size of the archive the set holds.
func (s *Set) Size() int64 { return s.h.ArchiveSize }

// Ignored are the files given that could not serve as volumes of the set.
func (s *Set) Ignored() []Problem { return s.ignored }

// Archive opens the archive the set holds, read in place.
func (s *Set) Archive() (*archive.Reader, error) {
	a, err := archive.NewReader(s.Name(), s, s.h.ArchiveSize)
	if err != nil {
		return nil, err
	}
	if a.PlanDigest() != s.h.Plan {
		a.Close()
		return nil, fmt.Errorf("%w: %s: the archive's %s is not the plan its volumes carry", ErrInvalid, s.Name(), archive.PlanFile)
	}
	return a, nil
}

// ReadAt reads the archive's bytes at off: each piece checked, and rebuilt
// from parity when its volume is missing or the piece damaged.
func (s *Set) ReadAt(p []byte, off int64) (int, error) {
	n := 0
	for n < len(p) {
		if off >= s.h.ArchiveSize {
			return n, io.EOF
		}
		if off < 0 {
			return n, fmt.Errorf("reading %s at %d", s.Name(), off)
		}
		d := int(off / s.h.Stride)
		within := off - int64(d)*s.h.Stride
		j := int(within / s.h.PieceSize)
		c, err := s.copyPiece(p[n:], d+1, j, within-int64(j)*s.h.PieceSize)
		if err != nil {
			return n, err
		}
		n += c
		off += int64(c)
	}
	return n, nil
}

// pieceLen is the length of piece j of a volume whose payload is size
// bytes: 0 beyond its end.
func (s *Set) pieceLen(size int64, j int) int64 {
	at := int64(j) * s.h.PieceSize
	return max(0, min(s.h.PieceSize, size-at))
}

// dataSize is the payload size of data volume number.
func (s *Set) dataSize(number int) int64 {
	_, size := shape{archiveSize: s.h.ArchiveSize, stride: s.h.Stride, data: s.h.DataVolumes}.payload(KindData, number)
	return size
}

// copyPiece copies into p the bytes of piece j of data volume number from
// at on, reading the piece (checked, or rebuilt) unless it is cached.
// Pieces are copied from under the lock, so that a buffer is used again
// only once no reader copies from it.
func (s *Set) copyPiece(p []byte, number, j int, at int64) (int, error) {
	s.mu.Lock()
	if b := s.cachedLocked(number, j); b != nil {
		defer s.mu.Unlock()
		return copy(p, b[at:]), nil
	}
	s.mu.Unlock()
	buf := s.buffer()
	b, err := s.loadPiece(number, j, buf)
	if err != nil {
		s.release(buf)
		return 0, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if old := s.cachedLocked(number, j); old != nil { // another reader loaded it meanwhile
		s.free = append(s.free, buf)
		return copy(p, old[at:]), nil
	}
	if len(s.cache) == cachedPieces {
		s.free = append(s.free, s.cache[0].b[:0])
		s.cache = s.cache[1:]
	}
	s.cache = append(s.cache, cachedPiece{number, j, b})
	return copy(p, b[at:]), nil
}

// loadPiece reads piece j of data volume number into buf, checked, or
// rebuilds it there.
func (s *Set) loadPiece(number, j int, buf []byte) ([]byte, error) {
	if v := s.data[number-1]; v != nil && !s.isBad(KindData, number, j) {
		if b, ok := s.readPiece(v, j, buf); ok {
			return b, nil
		}
	}
	return s.rebuild(number, j, buf)
}

// buffer returns a piece buffer, used before or new.
func (s *Set) buffer() []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	if n := len(s.free); n > 0 {
		b := s.free[n-1]
		s.free = s.free[:n-1]
		return b[:cap(b)]
	}
	return make([]byte, s.h.PieceSize)
}

func (s *Set) release(b []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.free = append(s.free, b)
}

// readPiece reads piece j of v into buf, which must hold it, or a new
// buffer when buf is nil, and checks it against v's sums; a piece that
// does not read or match is marked damaged.
func (s *Set) readPiece(v *inVolume, j int, buf []byte) ([]byte, bool) {
	n := s.pieceLen(v.h.Size, j)
	if buf == nil {
		buf = make([]byte, n)
	}
	b := buf[:n]
	_, err := v.f.ReadAt(b, v.payloadAt+int64(j)*s.h.PieceSize)
	if err == nil && sha256.Sum256(b) == v.sums[j] {
		return b, true
	}
	s.markBad(v, j)
	return nil, false
}

// checkPiece hashes piece j of v through buf and checks it against v's
// sums, as readPiece does, holding no more than buf in memory.
func (s *Set) checkPiece(v *inVolume, j int, buf []byte) bool {
	h := sha256.New()
	r := io.NewSectionReader(v.f, v.payloadAt+int64(j)*s.h.PieceSize, s.pieceLen(v.h.Size, j))
	if n, err := io.CopyBuffer(h, r, buf); err == nil && n == r.Size() && [sha256.Size]byte(h.Sum(nil)) == v.sums[j] {
		return true
	}
	s.markBad(v, j)
	return false
}

func (s *Set) markBad(v *inVolume, j int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.bad[pieceKey{v.h.Kind, v.h.Number, j}] = true
}

func (s *Set) isBad(kind string, number, j int) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.bad[pieceKey{kind, number, j}]
}

// cachedLocked returns piece j of data volume number if it is cached; the
// caller holds s.mu.
func (s *Set) cachedLocked(number, j int) []byte {
	for _, c := range s.cache {
		if c.number == number && c.piece == j {
			return c.b
		}
	}
	return nil
}

// rebuild rebuilds piece j of data volume number into buf from stripe j
// of the other volumes.
func (s *Set) rebuild(number, j int, buf []byte) ([]byte, error) {
	s.repair.Lock()
	defer s.repair.Unlock()
	if s.enc == nil {
		return nil, s.stripeLost(j)
	}
	n := s.pieceLen(s.h.Stride, j) // the stripe's length
	if s.stripe == nil {
		s.stripe = make([][]byte, s.h.DataVolumes+s.h.ParityVolumes)
		for i := range s.stripe {
			s.stripe[i] = make([]byte, s.h.PieceSize)
		}
	}
	shards := make([][]byte, len(s.stripe))
	have := 0
	for i, v := range slices.Concat(s.data, s.parity) {
		size := s.h.Stride
		if i < s.h.DataVolumes {
			size = s.dataSize(i + 1)
		}
		piece := s.stripe[i][:n]
		switch {
		case have == s.h.DataVolumes:
			// Enough to rebuild from: the rest is rebuilt too.
		case s.pieceLen(size, j) == 0: // beyond the last data volume's end: zeros
			clear(piece)
			shards[i] = piece
			have++
		case v == nil || s.isBad(v.h.Kind, v.h.Number, j):
		default:
			b, ok := s.readPiece(v, j, piece)
			if ok {
				clear(piece[len(b):])
				shards[i] = piece
				have++
			}
		}
		if shards[i] == nil {
			shards[i] = piece[:0] // to rebuild, in this buffer
		}
	}
	if have < s.h.DataVolumes {
		return nil, s.stripeLost(j)
	}
	if err := s.enc.ReconstructData(shards); err != nil {
		return nil, fmt.Errorf("rebuilding piece %d of %s from parity: %w", j+1, s.Name(), err)
	}
	// The stripe's buffers are used again: the piece goes to buf.
	return buf[:copy(buf, shards[number-1][:s.pieceLen(s.dataSize(number), j)])], nil
}

// stripeLost is the error for a stripe that too many volumes lack.
func (s *Set) stripeLost(j int) error {
	var lost []string
	for _, v := range slices.Concat(s.data, s.parity) {
		if v != nil && s.isBad(v.h.Kind, v.h.Number, j) {
			lost = append(lost, fmt.Sprintf("%s (%s) damaged in piece %d", v.h.Title(), v.path, j+1))
		}
	}
	for _, m := range s.missing() {
		lost = append(lost, m+" missing")
	}
	return &IncompleteError{Set: s.h.Set, Lost: lost, Parity: s.h.ParityVolumes}
}

// missing names the volumes of the set that were not given.
func (s *Set) missing() []string {
	var out []string
	for n, v := range s.data {
		if v == nil {
			out = append(out, fmt.Sprintf("data volume %d of %d", n+1, s.h.DataVolumes))
		}
	}
	for n, v := range s.parity {
		if v == nil {
			out = append(out, fmt.Sprintf("parity volume %d of %d", n+1, s.h.ParityVolumes))
		}
	}
	return out
}

// ErrIncomplete means a volume set cannot be read whole: more of its
// volumes are missing or damaged than its parity volumes cover.
var ErrIncomplete = errors.New("volume set incomplete")

// IncompleteError names what a volume set lacks.
type IncompleteError struct {
	Set string
	// Lost are the volumes missing and the pieces damaged.
	Lost []string
	// Parity is how many volumes the set's parity covers.
	Parity int
}

func (e *IncompleteError) Error() string {
	return fmt.Sprintf("%s: volume set %s cannot be read whole: %s; its parity covers %d", ErrIncomplete, e.Set, strings.Join(e.Lost, ", "), e.Parity)
}

// Is makes errors.Is(err, ErrIncomplete) true.
func (e *IncompleteError) Is(target error) bool { return target == ErrIncomplete }

var _ io.ReaderAt = (*Set)(nil)

// OpenArchive opens the archive paths hold: one archive file, or the
// volumes of a set (see [Open]). With scan, every piece of every volume is
// read and checked first ([Set.Scan]), and a set that cannot be read whole
// is an error wrapping [ErrIncomplete], before anything else is read; the
// report says what was missing or damaged, and is nil for a single archive.
func OpenArchive(ctx context.Context, scan bool, paths ...string) (*archive.Reader, *Report, error) {
	if len(paths) == 1 {
		if fi, err := os.Stat(paths[0]); err == nil && !fi.IsDir() && !IsVolume(paths[0]) {
			a, err := archive.Open(paths[0])
			return a, nil, err
		}
	}
	s, err := Open(paths...)
	if err != nil {
		return nil, nil, err
	}
	var rep *Report
	if scan {
		if rep, err = s.Scan(ctx); err != nil {
			s.Close()
			return nil, rep, err
		}
		if err := rep.Err(); err != nil {
			s.Close()
			return nil, rep, err
		}
	}
	a, err := s.Archive()
	if err != nil {
		s.Close()
		return nil, rep, err
	}
	return a, rep, nil
}
