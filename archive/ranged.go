package archive

import (
	"context"
	"errors"
	"fmt"
	"hash"
	"io"
	"sync"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/imokit/imo/internal/verify"
	"golang.org/x/sync/errgroup"
)

// A large blob is fetched in ranges, several at once, when its source
// serves ranges: over a long link every connection is capped (window over
// round-trip time, per-flow shaping), so one blob moves at one
// connection's speed however many jobs run.
const (
	// ChunkSize is the size of each range of a blob fetched in ranges.
	ChunkSize = 16 << 20
	// RangedFrom is how many bytes a blob must have left to fetch for it
	// to be fetched in ranges: below, one request does.
	RangedFrom = 2 * ChunkSize
)

// FetchRange opens bytes off to end (excluded) of the blob desc, and says
// where they come from, for errors. They need not be verified: the writer
// checks the whole blob. A source that cannot
// serve the range (a registry that ignores Range, or answers with another
// range) fails with an error wrapping [ErrNoRanges], and the blob is then
// fetched in one request.
type FetchRange func(ctx context.Context, desc v1.Descriptor, off, end int64) (body io.ReadCloser, source string, err error)

// ErrNoRanges means a source does not serve a blob by ranges.
var ErrNoRanges = errors.New("byte ranges not served")

// blobRange is one range of a blob fetched in ranges.
type blobRange struct {
	off, end int64
	done     bool
}

// rangedBlob is a blob being fetched in ranges: the ranges left to claim,
// those done, and the hash of the blob's bytes so far, in order.
type rangedBlob struct {
	b      *resumingBlob
	fetch  FetchRange
	source string

	mu      sync.Mutex
	chunks  []blobRange
	claimed int       // chunks claimed by a fetcher, from the first
	pending int       // helpers started that have yet to claim a range
	hashed  int       // chunks hashed, from the first
	h       hash.Hash // of the blob's bytes up to chunks[hashed].off
	err     error     // the first range that failed
	helpers sync.WaitGroup
}

// fetchRanged fetches the blob from b.have on in ranges of ChunkSize: the
// first one here, and as many others at once as the errgroup eg (the
// write's budget of requests) has room for, each claiming the next range
// left when it is free. Bytes are written in place as they arrive; the
// blob is hashed in order as the ranges done from its start grow (reading
// back the ranges that finished before those ahead of them), so that no
// byte is fetched twice, and checked whole at the end. h has hashed the
// bytes before b.have. When the first range is refused with ErrNoRanges,
// nothing is written and the error is returned for the caller to fetch the
// blob in one request.
func (b *resumingBlob) fetchRanged(ctx context.Context, fetch FetchRange, eg *errgroup.Group, h hash.Hash) error {
	rb := &rangedBlob{b: b, fetch: fetch, h: h}
	for off := b.have; off < b.desc.Size; off += ChunkSize {
		rb.chunks = append(rb.chunks, blobRange{off: off, end: min(off+ChunkSize, b.desc.Size)})
	}
	first := rb.chunks[0]
	rc, source, err := fetch(ctx, b.desc, first.off, first.end)
	if err != nil {
		return err
	}
	rb.source = source
	rb.claimed = 1
	rb.spawn(ctx, eg)
	err = rb.write(ctx, rc, 0)
	rc.Close()
	if err == nil {
		err = rb.work(ctx, eg)
	}
	rb.fail(err)
	rb.helpers.Wait()
	rb.mu.Lock()
	defer rb.mu.Unlock()
	if rb.err != nil {
		return rb.err
	}
	if got := digestOf(rb.h); got != b.desc.Digest {
		b.journal.record(b.line, 0) // nothing of it is worth keeping
		return &verify.MismatchError{Source: source, Want: b.desc.Digest, WantSize: b.desc.Size, Got: got, GotSize: b.desc.Size}
	}
	b.journal.keep(b.have)
	return nil
}

// spawn starts helpers in eg, while it has room and ranges are left
// unclaimed, each fetching ranges until none is left.
func (rb *rangedBlob) spawn(ctx context.Context, eg *errgroup.Group) {
	for {
		rb.mu.Lock()
		if len(rb.chunks)-rb.claimed-rb.pending <= 0 || rb.err != nil {
			rb.mu.Unlock()
			return
		}
		rb.pending++
		rb.mu.Unlock()
		rb.helpers.Add(1)
		started := eg.TryGo(func() error {
			defer rb.helpers.Done()
			rb.mu.Lock()
			rb.pending--
			rb.mu.Unlock()
			err := rb.work(ctx, nil)
			rb.fail(err)
			return err
		})
		if !started {
			rb.helpers.Done()
			rb.mu.Lock()
			rb.pending--
			rb.mu.Unlock()
			return
		}
	}
}

// work claims and fetches ranges until none is left or one fails; with
// eg, it also starts helpers as the group gets room.
func (rb *rangedBlob) work(ctx context.Context, eg *errgroup.Group) error {
	for {
		rb.mu.Lock()
		k := rb.claimed
		if k == len(rb.chunks) || rb.err != nil {
			rb.mu.Unlock()
			return nil
		}
		rb.claimed++
		rb.mu.Unlock()
		c := rb.chunks[k]
		rc, _, err := rb.fetch(ctx, rb.b.desc, c.off, c.end)
		if err != nil {
			return fmt.Errorf("fetching bytes %d to %d of %s: %w", c.off, c.end, rb.b.desc.Digest, err)
		}
		err = rb.write(ctx, rc, k)
		rc.Close()
		if err != nil {
			return err
		}
		if eg != nil {
			rb.spawn(ctx, eg)
		}
	}
}

// write writes range k from rc in place, then hashes what is done from
// the blob's start on and journals it.
func (rb *rangedBlob) write(ctx context.Context, rc io.Reader, k int) error {
	c := rb.chunks[k]
	buf := make([]byte, 256<<10)
	pos := c.off
	for pos < c.end {
		if err := ctx.Err(); err != nil {
			return err
		}
		m, err := rc.Read(buf[:min(int64(len(buf)), c.end-pos)])
		if m > 0 {
			if _, werr := rb.b.w.WriteAt(buf[:m], rb.b.off+pos); werr != nil {
				return fmt.Errorf("writing %s: %w", BlobName(rb.b.desc.Digest), werr)
			}
			pos += int64(m)
		}
		if errors.Is(err, io.EOF) && pos < c.end {
			return &verify.MismatchError{Source: rb.source, Want: rb.b.desc.Digest, WantSize: rb.b.desc.Size, GotSize: pos}
		}
		if err != nil && !errors.Is(err, io.EOF) {
			return fmt.Errorf("writing %s: %w", BlobName(rb.b.desc.Digest), err)
		}
	}
	rb.mu.Lock()
	defer rb.mu.Unlock()
	rb.chunks[k].done = true
	return rb.advance(buf)
}

// advance hashes the ranges done from the first not yet hashed on,
// reading them back, and journals how far the blob is whole. The caller
// holds rb.mu.
func (rb *rangedBlob) advance(buf []byte) error {
	start := rb.hashed
	for rb.hashed < len(rb.chunks) && rb.chunks[rb.hashed].done {
		c := rb.chunks[rb.hashed]
		r := io.NewSectionReader(rb.b.w, rb.b.off+c.off, c.end-c.off)
		if _, err := io.CopyBuffer(rb.h, r, buf); err != nil {
			return fmt.Errorf("reading back %s: %w", BlobName(rb.b.desc.Digest), err)
		}
		rb.hashed++
	}
	if rb.hashed == start {
		return nil
	}
	at := rb.b.desc.Size
	if rb.hashed < len(rb.chunks) {
		at = rb.chunks[rb.hashed].off
	}
	return rb.b.journal.record(rb.b.line, at)
}

// fail records the first error of a range.
func (rb *rangedBlob) fail(err error) {
	if err == nil {
		return
	}
	rb.mu.Lock()
	defer rb.mu.Unlock()
	if rb.err == nil {
		rb.err = err
	}
}
