package archive

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"strconv"
	"sync"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/imokit/imo/internal/verify"
	"golang.org/x/sync/errgroup"
)

// FetchFrom opens the bytes of the blob desc from byte off to its end, and
// says where they come from, for errors. They need not be verified: the
// writer checks the whole blob, the bytes already written included.
type FetchFrom func(ctx context.Context, desc v1.Descriptor, off int64) (body io.ReadCloser, source string, err error)

// ReadWriterAt is storage written at offsets and read back.
type ReadWriterAt interface {
	io.ReaderAt
	io.WriterAt
}

// Resumed is what a resumable write kept of an earlier attempt, and wrote.
type Resumed struct {
	// Kept is how many bytes of blobs an earlier attempt wrote that were
	// kept: checked, and not fetched again.
	Kept int64
	// Discarded says why an earlier attempt's bytes were not used, when
	// there was one: "" when they were, or when there was none.
	Discarded string
	// Written is how many bytes of blobs the archive holds so far,
	// however the write ended: 0 when no blob byte was written yet.
	Written int64
}

// The journal of a resumable write: a header naming the layout, then one
// fixed-width line per fetched blob saying how many of its bytes are
// written.
const (
	journalMagic = "imo partial archive 1\n"
	journalLine  = 17 // 16 hex digits and a newline
	// journalEvery is how many bytes a blob advances between journal
	// updates.
	journalEvery = 1 << 20
)

// JournalSize is the size of the journal of a resumable write of l.
func (l *Layout) JournalSize() int64 {
	return int64(len(journalMagic)+len("layout ")+2*sha256.Size+1) + int64(l.blobCount())*journalLine
}

func (l *Layout) blobCount() int {
	n := 0
	for _, s := range l.segs {
		if s.blob != nil {
			n++
		}
	}
	return n
}

// id names the layout, and how it is stored (salt), in a journal: every
// offset and every byte of metadata; a plan that changed, a tag that moved
// in between, makes another id.
func (l *Layout) id(salt string) string {
	h := sha256.New()
	fmt.Fprintf(h, "%s\n%d\n", salt, l.size)
	for _, s := range l.segs {
		switch {
		case s.blob != nil:
			fmt.Fprintf(h, "blob %d %s %d\n", s.off, s.blob.Digest, s.blob.Size)
		case s.file != nil:
			fmt.Fprintf(h, "file %d %d\n", s.off, s.file.Size)
		case bytes.Equal(s.lit, l.sig):
			fmt.Fprintf(h, "signature %d %d\n", s.off, len(s.lit)) // an ECDSA signature differs each time
		default:
			fmt.Fprintf(h, "literal %d %x\n", s.off, sha256.Sum256(s.lit))
		}
	}
	return hex.EncodeToString(h.Sum(nil))
}

// Resumption is a write of an archive that can be resumed: its journal
// records how much of each blob is written, so that an interrupted write
// can be taken up where it stopped.
type Resumption struct {
	// Ranges, when set, fetches ranges of a blob: a blob with RangedFrom
	// bytes or more left to fetch is then fetched in ranges of ChunkSize,
	// several at once within the write's jobs.
	Ranges FetchRange

	l       *Layout
	journal ReadWriterAt
	head    string  // the journal's header, naming the layout
	done    []int64 // what an earlier attempt wrote of each blob; nil for none
	// Discarded says why an earlier attempt's journal was not used: ""
	// when it was, or when there was none.
	Discarded string
}

// Resume reads journal, which holds JournalSize bytes for l, for what an
// earlier attempt at writing l, stored as salt names (a single file, a
// volume size), wrote. A journal of another layout (the images changed in
// between, a tag moved), or fresh, starts afresh.
func (l *Layout) Resume(journal ReadWriterAt, salt string, fresh bool) *Resumption {
	r := &Resumption{l: l, journal: journal, head: journalMagic + "layout " + l.id(salt) + "\n"}
	r.done, r.Discarded = l.readJournal(journal, r.head)
	if fresh && r.done != nil {
		r.done, r.Discarded = nil, "asked to start afresh"
	}
	return r
}

// Claimed is how many bytes of blobs the earlier attempt says it wrote:
// those the write will check and keep rather than fetch.
func (r *Resumption) Claimed() int64 {
	var n int64
	k := 0
	for _, s := range r.l.segs {
		if s.blob != nil {
			if r.done != nil {
				n += min(r.done[k], s.blob.Size)
			}
			k++
		}
	}
	return n
}

// Write writes the archive into w, as [Layout.WriteAt] does, keeping what
// the earlier attempt wrote: each blob it finished is hashed where it lies
// and kept when it matches, and a blob it began is hashed as far as it got
// and fetched from there on. Up to jobs blobs are fetched at once. Every
// blob is checked whole against its digest; a kept part that does not
// check out is fetched again. However it ends, the journal says how far
// it got, and Resumed says what it kept and wrote.
func (r *Resumption) Write(ctx context.Context, w ReadWriterAt, fetch FetchFrom, jobs int) (Resumed, error) {
	l := r.l
	// Until the blobs are written, what the earlier attempt wrote is what
	// the storage holds: a failure before then must not throw it away.
	res := Resumed{Discarded: r.Discarded, Written: r.Claimed()}
	table := make([]byte, 0, l.blobCount()*journalLine)
	for k := range l.blobCount() {
		n := int64(0)
		if r.done != nil {
			n = r.done[k]
		}
		table = append(table, fmt.Sprintf("%016x\n", n)...)
	}
	if _, err := r.journal.WriteAt(append([]byte(r.head), table...), 0); err != nil {
		return res, fmt.Errorf("writing the journal: %w", err)
	}
	for _, s := range l.segs {
		if s.lit != nil {
			if _, err := w.WriteAt(s.lit, s.off); err != nil {
				return res, fmt.Errorf("writing archive: %w", err)
			}
		}
	}
	progress := &journalWriter{journal: r.journal, at: int64(len(r.head)), n: make([]int64, l.blobCount())}
	copy(progress.n, r.done)
	eg, ectx := errgroup.WithContext(ctx)
	eg.SetLimit(jobs)
	k := 0
	for _, s := range l.segs {
		switch {
		case s.file != nil:
			eg.Go(func() error { return copyFile(ectx, io.NewOffsetWriter(w, s.off), s.file) })
		case s.blob != nil:
			b := &resumingBlob{w: w, desc: *s.blob, off: s.off, line: k, journal: progress}
			if r.done != nil {
				b.have = min(r.done[k], s.blob.Size)
			}
			k++
			eg.Go(func() error { return b.write(ectx, fetch, r.Ranges, eg) })
		}
	}
	err := eg.Wait()
	res.Kept, res.Written = progress.totals()
	return res, err
}

// readJournal reads an earlier attempt's journal: how many bytes of each
// blob it wrote, or nil and why it cannot be used.
func (l *Layout) readJournal(journal io.ReaderAt, head string) ([]int64, string) {
	b := make([]byte, l.JournalSize())
	n, _ := journal.ReadAt(b, 0)
	switch {
	case n == 0:
		return nil, ""
	case !bytes.HasPrefix(b[:n], []byte(journalMagic)):
		return nil, "it holds no journal of an imo pull"
	case n < len(head) || string(b[:len(head)]) != head:
		return nil, "it is a pull of other images, or of the same ones stored otherwise (a tag moved since?)"
	case int64(n) < l.JournalSize():
		return nil, "its journal is cut short"
	}
	done := make([]int64, l.blobCount())
	for k := range done {
		line := b[len(head)+k*journalLine : len(head)+(k+1)*journalLine]
		v, err := strconv.ParseInt(string(line[:journalLine-1]), 16, 64)
		if err != nil || v < 0 || line[journalLine-1] != '\n' {
			return nil, "its journal does not read"
		}
		done[k] = v
	}
	return done, ""
}

// journalWriter records blobs' progress in the journal, and keeps count.
type journalWriter struct {
	journal io.WriterAt
	at      int64 // where the lines start
	mu      sync.Mutex
	n       []int64 // the bytes each blob has written
	kept    int64
}

// record notes that line's blob has n bytes written.
func (j *journalWriter) record(line int, n int64) error {
	j.mu.Lock()
	j.n[line] = n
	j.mu.Unlock()
	if _, err := j.journal.WriteAt(fmt.Appendf(nil, "%016x\n", n), j.at+int64(line)*journalLine); err != nil {
		return fmt.Errorf("writing the journal: %w", err)
	}
	return nil
}

// keep counts n bytes of an earlier attempt as kept.
func (j *journalWriter) keep(n int64) {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.kept += n
}

// totals are the bytes kept, and the bytes of blobs written in all.
func (j *journalWriter) totals() (kept, written int64) {
	j.mu.Lock()
	defer j.mu.Unlock()
	for _, n := range j.n {
		written += n
	}
	return j.kept, written
}

// resumingBlob is one blob of a resumable write.
type resumingBlob struct {
	w       ReadWriterAt
	desc    v1.Descriptor
	off     int64 // where its content starts in the archive
	line    int   // its line in the journal
	have    int64 // bytes an earlier attempt wrote
	journal *journalWriter
}

// write writes the blob, keeping what an earlier attempt wrote when it
// checks out; with ranges, a blob with RangedFrom bytes or more to fetch
// is fetched in ranges, sharing eg's budget of requests.
func (b *resumingBlob) write(ctx context.Context, fetch FetchFrom, ranges FetchRange, eg *errgroup.Group) error {
	h := sha256.New()
	if b.have > 0 {
		if err := b.hashPrefix(ctx, h); err != nil {
			return err
		}
		if b.have == b.desc.Size {
			if digestOf(h) == b.desc.Digest {
				b.journal.keep(b.have)
				return nil
			}
			b.have = 0
			h.Reset()
		}
	}
	if ranges != nil && b.desc.Size-b.have >= RangedFrom {
		err := b.fetchRanged(ctx, ranges, eg, h)
		if !errors.Is(err, ErrNoRanges) {
			return err
		}
	}
	err := b.fetch(ctx, fetch, h)
	if errors.Is(err, verify.ErrMismatch) && b.have > 0 && ctx.Err() == nil {
		// What the earlier attempt wrote does not check out: the bytes
		// did not all reach the disk. Fetch the whole blob.
		b.have = 0
		h.Reset()
		err = b.fetch(ctx, fetch, h)
	}
	return err
}

// hashPrefix hashes the bytes an earlier attempt wrote. Storage shorter
// than the journal says (a volume cut short, a file truncated) keeps
// nothing: the blob is fetched whole.
func (b *resumingBlob) hashPrefix(ctx context.Context, h hash.Hash) error {
	n, err := io.Copy(h, contextReader{ctx: ctx, r: io.NewSectionReader(b.w, b.off, b.have)})
	if err != nil {
		return fmt.Errorf("reading back %s: %w", BlobName(b.desc.Digest), err)
	}
	if n < b.have {
		b.have = 0
		h.Reset()
	}
	return nil
}

// fetch fetches the blob from b.have on, h having hashed what comes
// before, writes it in place, journals its progress and checks it whole.
func (b *resumingBlob) fetch(ctx context.Context, fetch FetchFrom, h hash.Hash) error {
	if err := b.journal.record(b.line, b.have); err != nil {
		return err
	}
	rc, source, err := fetch(ctx, b.desc, b.have)
	if err != nil {
		return err
	}
	defer rc.Close()
	n, last := b.have, b.have
	buf := make([]byte, 256<<10)
	// However the fetch ends, the journal says how far it got; a failure
	// to record that costs a later attempt bytes, never correctness.
	defer func() { b.journal.record(b.line, n) }()
	for {
		m, rerr := rc.Read(buf)
		if n+int64(m) > b.desc.Size {
			got := n + int64(m)
			n = 0
			return &verify.MismatchError{Source: source, Want: b.desc.Digest, WantSize: b.desc.Size, GotSize: got}
		}
		if m > 0 {
			if _, err := b.w.WriteAt(buf[:m], b.off+n); err != nil {
				return fmt.Errorf("writing %s: %w", BlobName(b.desc.Digest), err)
			}
			h.Write(buf[:m])
			n += int64(m)
			if n-last >= journalEvery {
				if err := b.journal.record(b.line, n); err != nil {
					return err
				}
				last = n
			}
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			return fmt.Errorf("writing %s: %w", BlobName(b.desc.Digest), rerr)
		}
	}
	if got := digestOf(h); n != b.desc.Size || got != b.desc.Digest {
		err := &verify.MismatchError{Source: source, Want: b.desc.Digest, WantSize: b.desc.Size, Got: got, GotSize: n}
		n = 0 // nothing of it is worth keeping
		return err
	}
	b.journal.keep(b.have)
	return nil
}

// digestOf is the sha256 digest h has summed.
func digestOf(h hash.Hash) v1.Hash {
	return v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(h.Sum(nil))}
}
