package sublayer

import (
	"bufio"
	"bytes"
	"container/heap"
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"slices"
)

// The index of a Base lives on disk, so that memory does not grow with the
// number of files in the base layers: records are appended to a log as the
// layers are read, and the first lookup sorts the log into a table that a
// lookup reads with a few small reads. Every record starts with a 32-byte
// key.
const keySize = 32

// sortChunk is how many records are sorted in memory at a time when a
// table is built; larger logs are sorted in runs that are then merged. A
// variable for tests.
var sortChunk = 1 << 15

// table is a sorted file of records of recSize bytes, each key at most
// once, with a directory of where each bucket of keys (by their first
// bits) starts.
type table struct {
	f       *os.File
	recSize int
	n       int64
	bits    uint
	dir     []int64 // 1<<bits + 1 record numbers
	buf     []byte  // for find, which its callers serialize
}

// bucket returns the bucket of a key.
func (t *table) bucket(key []byte) uint64 {
	if t.bits == 0 {
		return 0
	}
	return binary.BigEndian.Uint64(key[:8]) >> (64 - t.bits)
}

// find reads the record with key into rec and reports whether there is
// one. Calls must not overlap.
func (t *table) find(key []byte, rec []byte) (bool, error) {
	b := t.bucket(key)
	lo, hi := t.dir[b], t.dir[b+1]
	if hi-lo <= 32 {
		if t.buf == nil {
			t.buf = make([]byte, 32*t.recSize)
		}
		buf := t.buf[:int(hi-lo)*t.recSize]
		if _, err := t.f.ReadAt(buf, lo*int64(t.recSize)); err != nil {
			return false, err
		}
		for p := buf; len(p) > 0; p = p[t.recSize:] {
			if bytes.Equal(p[:keySize], key) {
				copy(rec, p[:t.recSize])
				return true, nil
			}
		}
		return false, nil
	}
	for lo < hi {
		mid := lo + (hi-lo)/2
		if _, err := t.f.ReadAt(rec[:t.recSize], mid*int64(t.recSize)); err != nil {
			return false, err
		}
		switch c := bytes.Compare(rec[:keySize], key); {
		case c == 0:
			return true, nil
		case c < 0:
			lo = mid + 1
		default:
			hi = mid
		}
	}
	return false, nil
}

func (t *table) close() {
	t.f.Close()
	os.Remove(t.f.Name())
}

// keep says, for the records of one key in log order, which one a table
// keeps: the first or the last; and drop, if set, whether the kept one is
// left out after all.
type keep struct {
	last bool
	drop func(rec []byte) bool
}

// dedup removes from recs, sorted by key and stably so, all but the record
// k keeps of each key.
func (k keep) dedup(recs [][]byte) [][]byte {
	out := recs[:0]
	for i := 0; i < len(recs); {
		j := i + 1
		for j < len(recs) && bytes.Equal(recs[j][:keySize], recs[i][:keySize]) {
			j++
		}
		r := recs[i]
		if k.last {
			r = recs[j-1]
		}
		out = append(out, r)
		i = j
	}
	return out
}

// buildTable sorts the log of n records of recSize bytes into a table in
// dir. Memory holds one chunk of records and a small buffer per run.
func buildTable(dir string, log io.ReaderAt, n int64, recSize int, k keep) (*table, error) {
	var runs []run
	var runFile *os.File
	defer func() {
		if runFile != nil {
			runFile.Close()
			os.Remove(runFile.Name())
		}
	}()
	var chunk []byte
	var recs [][]byte
	var runOff int64
	for start := int64(0); start < n; start += int64(sortChunk) {
		m := min(n-start, int64(sortChunk))
		chunk = slices.Grow(chunk[:0], int(m)*recSize)[:int(m)*recSize]
		if _, err := log.ReadAt(chunk, start*int64(recSize)); err != nil {
			return nil, fmt.Errorf("reading the base index: %w", err)
		}
		recs = recs[:0]
		for p := chunk; len(p) > 0; p = p[recSize:] {
			recs = append(recs, p[:recSize])
		}
		slices.SortStableFunc(recs, func(a, b []byte) int { return bytes.Compare(a[:keySize], b[:keySize]) })
		recs = k.dedup(recs)
		if n <= int64(sortChunk) {
			return writeTable(dir, n, recSize, k, &sliceSource{recs: recs})
		}
		if runFile == nil {
			f, err := os.CreateTemp(dir, "index-run-")
			if err != nil {
				return nil, err
			}
			runFile = f
		}
		bw := bufio.NewWriterSize(&offsetWriter{f: runFile, off: runOff}, 64<<10)
		for _, r := range recs {
			bw.Write(r)
		}
		if err := bw.Flush(); err != nil {
			return nil, fmt.Errorf("writing the base index: %w", err)
		}
		runs = append(runs, run{off: runOff, n: int64(len(recs))})
		runOff += int64(len(recs) * recSize)
	}
	if len(runs) == 0 {
		return writeTable(dir, 0, recSize, k, &sliceSource{})
	}
	chunk, recs = nil, nil
	bufSize := min(max(4<<20/len(runs), 4<<10), 64<<10)
	m := &merger{recSize: recSize}
	for i, r := range runs {
		r.br = bufio.NewReaderSize(io.NewSectionReader(runFile, r.off, r.n*int64(recSize)), bufSize)
		r.rec = make([]byte, recSize)
		r.order = i
		ok, err := r.next()
		if err != nil {
			return nil, err
		}
		if ok {
			rr := r
			m.runs = append(m.runs, &rr)
		}
	}
	heap.Init(m)
	return writeTable(dir, n, recSize, k, m)
}

// recordSource gives records in key order, several per key in log order.
type recordSource interface {
	// next returns the next record, valid until the following call, or
	// nil at the end.
	next() ([]byte, error)
}

type sliceSource struct {
	recs [][]byte
	i    int
}

func (s *sliceSource) next() ([]byte, error) {
	if s.i == len(s.recs) {
		return nil, nil
	}
	s.i++
	return s.recs[s.i-1], nil
}

// run is a sorted run of records in the run file.
type run struct {
	off, n int64
	br     *bufio.Reader
	rec    []byte
	order  int // runs of earlier records come first
}

func (r *run) next() (bool, error) {
	if r.n == 0 {
		return false, nil
	}
	r.n--
	if _, err := io.ReadFull(r.br, r.rec); err != nil {
		return false, fmt.Errorf("reading the base index: %w", err)
	}
	return true, nil
}

// merger merges runs, records of the same key in the order of the runs.
type merger struct {
	recSize int
	runs    []*run
	out     []byte
	pending *run // the run whose record was returned last, to advance
}

func (m *merger) Len() int { return len(m.runs) }
func (m *merger) Less(i, j int) bool {
	if c := bytes.Compare(m.runs[i].rec[:keySize], m.runs[j].rec[:keySize]); c != 0 {
		return c < 0
	}
	return m.runs[i].order < m.runs[j].order
}
func (m *merger) Swap(i, j int) { m.runs[i], m.runs[j] = m.runs[j], m.runs[i] }
func (m *merger) Push(x any)    { m.runs = append(m.runs, x.(*run)) }
func (m *merger) Pop() any {
	r := m.runs[len(m.runs)-1]
	m.runs = m.runs[:len(m.runs)-1]
	return r
}

func (m *merger) next() ([]byte, error) {
	if r := m.pending; r != nil {
		m.pending = nil
		ok, err := r.next()
		if err != nil {
			return nil, err
		}
		if ok {
			heap.Fix(m, 0)
		} else {
			heap.Pop(m)
		}
	}
	if len(m.runs) == 0 {
		return nil, nil
	}
	r := m.runs[0]
	m.out = append(m.out[:0], r.rec...)
	m.pending = r
	return m.out, nil
}

// writeTable writes the records of src, keeping one per key, into a new
// table file with its bucket directory. n is at least the number of
// records written.
func writeTable(dir string, n int64, recSize int, k keep, src recordSource) (*table, error) {
	f, err := os.CreateTemp(dir, "index-")
	if err != nil {
		return nil, err
	}
	t := &table{f: f, recSize: recSize}
	for t.bits < 16 && int64(8)<<t.bits < n {
		t.bits++
	}
	counts := make([]int64, 1<<t.bits+1)
	bw := bufio.NewWriterSize(f, 64<<10)
	held := make([]byte, recSize)
	have := false
	emit := func() {
		if !have || (k.drop != nil && k.drop(held)) {
			return
		}
		bw.Write(held)
		counts[t.bucket(held)+1]++
		t.n++
	}
	for {
		r, err := src.next()
		if err != nil {
			t.close()
			return nil, err
		}
		if r == nil {
			break
		}
		if have && bytes.Equal(r[:keySize], held[:keySize]) {
			if k.last {
				copy(held, r)
			}
			continue
		}
		emit()
		copy(held, r)
		have = true
	}
	emit()
	if err := bw.Flush(); err != nil {
		t.close()
		return nil, fmt.Errorf("writing the base index: %w", err)
	}
	for i := 1; i < len(counts); i++ {
		counts[i] += counts[i-1]
	}
	t.dir = counts
	return t, nil
}
