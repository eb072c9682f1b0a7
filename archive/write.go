package archive

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"sync"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/imokit/imo/internal/verify"
)

// Fetch opens the blob desc for writing into an archive. Its reader must
// yield exactly the blob's bytes, verified against desc, and fail rather
// than end early.
type Fetch func(ctx context.Context, desc v1.Descriptor) (io.ReadCloser, error)

// Prefetching for the stream: each blob downloading ahead of the writer
// holds at most prefetchChunks chunks of prefetchChunk bytes.
const (
	prefetchChunk  = 256 << 10
	prefetchChunks = 16
)

var chunkPool = sync.Pool{New: func() any { b := make([]byte, prefetchChunk); return &b }}

// prefetch is a blob, or a range of one, downloading ahead of the writer.
type prefetch struct {
	chunks chan chunk
	err    error  // set before chunks is closed
	source string // where a range comes from, set before chunks is closed
	cancel context.CancelFunc
}

// chunk is the first n bytes of a pooled buffer.
type chunk struct {
	buf *[]byte
	n   int
}

// WriteTo writes the archive to w, in order, fetching its blobs with fetch.
// Up to jobs blobs download and are verified at once, each into a bounded
// window, while w receives them one after the other. With ranges, a blob
// of RangedFrom bytes or more comes in ranges of ChunkSize, each in its own
// window and counting as one of the jobs, hashed in order as w receives
// them and checked whole at its end; when a source refuses its first
// range, the blob comes whole. It returns when the archive is written or on
// the first error, with every fetch ended.
func (l *Layout) WriteTo(ctx context.Context, w io.Writer, fetch Fetch, ranges FetchRange, jobs int) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	var parts []part
	for _, s := range l.segs {
		if s.blob == nil {
			continue
		}
		if ranges == nil || s.blob.Size < RangedFrom {
			parts = append(parts, part{desc: *s.blob, end: s.blob.Size, last: true})
			continue
		}
		for off := int64(0); off < s.blob.Size; off += ChunkSize {
			end := min(off+ChunkSize, s.blob.Size)
			parts = append(parts, part{desc: *s.blob, off: off, end: end, ranged: true, last: end == s.blob.Size})
		}
	}
	start := func(k int) *prefetch {
		pctx, pcancel := context.WithCancel(ctx)
		p := &prefetch{chunks: make(chan chunk, prefetchChunks), cancel: pcancel}
		pt := parts[k]
		open := func(ctx context.Context) (io.ReadCloser, error) { return fetch(ctx, pt.desc) }
		if pt.ranged {
			open = func(ctx context.Context) (io.ReadCloser, error) {
				rc, source, err := ranges(ctx, pt.desc, pt.off, pt.end)
				p.source = source
				return rc, err
			}
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer close(p.chunks)
			p.err = fetchChunks(pctx, open, pt.desc, pt.end-pt.off, p.chunks)
		}()
		return p
	}
	fetches := make([]*prefetch, len(parts))
	started, current := 0, 0
	var h hash.Hash // of a blob coming in ranges, so far
	for _, s := range l.segs {
		switch {
		case s.file != nil:
			if err := copyFile(ctx, w, s.file); err != nil {
				return err
			}
			continue
		case s.blob == nil:
			if _, err := w.Write(s.lit); err != nil {
				return fmt.Errorf("writing archive: %w", err)
			}
			continue
		}
		for {
			for ; started < len(parts) && started < current+jobs; started++ {
				fetches[started] = start(started)
			}
			pt, p := parts[current], fetches[current]
			if pt.ranged && pt.off == 0 {
				h = sha256.New()
			}
			err := drain(w, p, h, pt.ranged)
			fetches[current] = nil
			if pt.ranged && pt.off == 0 && errors.Is(err, ErrNoRanges) {
				// The source serves no ranges: the blob comes whole, in
				// the place of its ranges.
				for ; current+1 < len(parts) && !parts[current].last; current++ {
					if f := fetches[current+1]; f != nil {
						f.cancel()
						fetches[current+1] = nil
					}
				}
				parts[current] = part{desc: pt.desc, end: pt.desc.Size, last: true}
				fetches[current] = start(current)
				started = max(started, current+1)
				continue
			}
			if err != nil {
				return err
			}
			current++
			if pt.last {
				if pt.ranged {
					if got := digestOf(h); got != pt.desc.Digest {
						return fmt.Errorf("writing %s: %w", BlobName(pt.desc.Digest), &verify.MismatchError{Source: p.source, Want: pt.desc.Digest, WantSize: pt.desc.Size, Got: got, GotSize: pt.desc.Size})
					}
				}
				break
			}
		}
	}
	return nil
}

// part is a blob to fetch for the stream, or a range of one.
type part struct {
	desc     v1.Descriptor
	off, end int64
	ranged   bool // a range: unverified, hashed as it is written
	last     bool // the blob's last part
}

// drain writes a prefetched part's chunks to w as they come, hashing them
// into h when the part is a range.
func drain(w io.Writer, p *prefetch, h hash.Hash, ranged bool) error {
	for c := range p.chunks {
		if ranged {
			h.Write((*c.buf)[:c.n])
		}
		_, err := w.Write((*c.buf)[:c.n])
		chunkPool.Put(c.buf)
		if err != nil {
			p.cancel()
			return fmt.Errorf("writing archive: %w", err)
		}
	}
	return p.err
}

// fetchChunks downloads one part of size bytes into chunks.
func fetchChunks(ctx context.Context, open func(context.Context) (io.ReadCloser, error), desc v1.Descriptor, size int64, chunks chan<- chunk) error {
	rc, err := open(ctx)
	if err != nil {
		return err
	}
	defer rc.Close()
	var got int64
	for {
		buf := chunkPool.Get().(*[]byte)
		n, err := fill(rc, *buf)
		got += int64(n)
		if n > 0 {
			select {
			case chunks <- chunk{buf, n}:
			case <-ctx.Done():
				return ctx.Err()
			}
		} else {
			chunkPool.Put(buf)
		}
		if err == io.EOF { // exactly io.EOF: a verified reader checked size and digest
			if got != size {
				return fmt.Errorf("writing %s: %w", BlobName(desc.Digest), &verify.MismatchError{Source: "its source", Want: desc.Digest, WantSize: desc.Size, GotSize: got})
			}
			return nil
		}
		if err != nil {
			return fmt.Errorf("writing %s: %w", BlobName(desc.Digest), err)
		}
	}
}

// fill reads into b until it is full or r fails.
func fill(r io.Reader, b []byte) (int, error) {
	n := 0
	for n < len(b) {
		m, err := r.Read(b[n:])
		n += m
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

// copyFile copies a local file to w, stopping when ctx ends.
func copyFile(ctx context.Context, w io.Writer, f *File) error {
	src, err := os.Open(f.Path)
	if err != nil {
		return fmt.Errorf("writing archive: %w", err)
	}
	defer src.Close()
	if n, err := io.Copy(w, contextReader{ctx: ctx, r: src}); err != nil || n != f.Size {
		return fmt.Errorf("writing archive: copied %d of %d bytes of %s: %v", n, f.Size, f.Path, err)
	}
	return nil
}
