package archive

import (
	"context"
	"fmt"
	"io"
	"os"
	"sync"

	v1 "github.com/google/go-containerregistry/pkg/v1"
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

// prefetch is a blob downloading ahead of the writer.
type prefetch struct {
	chunks chan chunk
	err    error // set before chunks is closed
}

// chunk is the first n bytes of a pooled buffer.
type chunk struct {
	buf *[]byte
	n   int
}

// WriteTo writes the archive to w, in order, fetching its blobs with fetch.
// Up to jobs blobs download and are verified at once, each into a bounded
// window, while w receives them one after the other. It returns when the
// archive is written or on the first error, with every fetch ended.
func (l *Layout) WriteTo(ctx context.Context, w io.Writer, fetch Fetch, jobs int) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	var blobs []v1.Descriptor
	for _, s := range l.segs {
		if s.blob != nil {
			blobs = append(blobs, *s.blob)
		}
	}
	fetches := make([]*prefetch, len(blobs))
	started, current := 0, 0
	for _, s := range l.segs {
		switch {
		case s.file != nil:
			if err := copyFile(ctx, w, s.file); err != nil {
				return err
			}
		case s.blob == nil:
			if _, err := w.Write(s.lit); err != nil {
				return fmt.Errorf("writing archive: %w", err)
			}
		default:
			for ; started < len(blobs) && started < current+jobs; started++ {
				p := &prefetch{chunks: make(chan chunk, prefetchChunks)}
				fetches[started] = p
				desc := blobs[started]
				wg.Add(1)
				go func() {
					defer wg.Done()
					defer close(p.chunks)
					p.err = fetchChunks(ctx, fetch, desc, p.chunks)
				}()
			}
			if err := drain(w, fetches[current]); err != nil {
				return err
			}
			fetches[current] = nil
			current++
		}
	}
	return nil
}

// drain writes a prefetched blob's chunks to w as they come.
func drain(w io.Writer, p *prefetch) error {
	for c := range p.chunks {
		_, err := w.Write((*c.buf)[:c.n])
		chunkPool.Put(c.buf)
		if err != nil {
			return fmt.Errorf("writing archive: %w", err)
		}
	}
	return p.err
}

// fetchChunks downloads one blob, verified, into chunks.
func fetchChunks(ctx context.Context, fetch Fetch, desc v1.Descriptor, chunks chan<- chunk) error {
	rc, err := fetch(ctx, desc)
	if err != nil {
		return err
	}
	defer rc.Close()
	for {
		buf := chunkPool.Get().(*[]byte)
		n, err := fill(rc, *buf)
		if n > 0 {
			select {
			case chunks <- chunk{buf, n}:
			case <-ctx.Done():
				return ctx.Err()
			}
		} else {
			chunkPool.Put(buf)
		}
		if err == io.EOF { // exactly io.EOF: the verified reader checked size and digest
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
