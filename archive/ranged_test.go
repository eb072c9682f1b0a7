package archive

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync/atomic"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/imokit/imo/internal/verify"
)

// rangeServer serves ranges of the fixture's blobs, counting requests,
// bytes and the most in flight at once, and can refuse ranges or fail one.
type rangeServer struct {
	f                 *resumeFixture
	requests, served  atomic.Int64
	inFlight, maxSeen atomic.Int64
	refuse            bool  // answer as a registry that ignores Range
	failAt            int64 // fail the range starting here, when not 0
}

func (s *rangeServer) fetch(_ context.Context, d v1.Descriptor, off, end int64) (io.ReadCloser, string, error) {
	s.requests.Add(1)
	if s.refuse {
		return nil, "", fmt.Errorf("the whole blob came back: %w", ErrNoRanges)
	}
	if off == s.failAt && off != 0 {
		return nil, "", errCut
	}
	n := s.inFlight.Add(1)
	for m := s.maxSeen.Load(); n > m && !s.maxSeen.CompareAndSwap(m, n); m = s.maxSeen.Load() {
	}
	return &countedRange{r: bytes.NewReader(s.f.blobs[d.Digest][off:end]), s: s}, "memory", nil
}

type countedRange struct {
	r *bytes.Reader
	s *rangeServer
}

func (c *countedRange) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.s.served.Add(int64(n))
	return n, err
}

func (c *countedRange) Close() error { c.s.inFlight.Add(-1); return nil }

// TestRanged writes an archive whose big blob is fetched in ranges: the
// bytes are a clean write's, each byte is fetched once, no more ranges run
// at once than jobs; a source refusing ranges gets one request; a range
// that fails leaves a journal from which the blob resumes at the end of
// the ranges done from its start.
func TestRanged(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := newResumeFixture(t, 100<<10, 3*ChunkSize+12345, 200<<10)
	big := f.layers[1]
	small := f.l.Fetched() - big.Size

	t.Run("in ranges", func(t *testing.T) {
		s := &rangeServer{f: f}
		storage, journal := &memory{}, &memory{}
		r := f.l.Resume(journal, "file", false)
		r.Ranges = s.fetch
		f.fetched.Store(0)
		if _, err := r.Write(ctx, storage, f.fetchFrom, 3); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(storage.b[:f.l.Size()], f.whole) {
			t.Fatal("the archive written in ranges differs from a clean one")
		}
		if s.requests.Load() != 4 || s.served.Load() != big.Size || f.fetched.Load() != small {
			t.Errorf("%d ranges served %d bytes, and %d bytes came whole; want 4 ranges of the %d-byte blob, the small blobs (%d bytes) whole", s.requests.Load(), s.served.Load(), f.fetched.Load(), big.Size, small)
		}
		if s.maxSeen.Load() > 3 {
			t.Errorf("%d ranges at once with 3 jobs", s.maxSeen.Load())
		}
	})

	t.Run("ranges refused", func(t *testing.T) {
		s := &rangeServer{f: f, refuse: true}
		storage, journal := &memory{}, &memory{}
		r := f.l.Resume(journal, "file", false)
		r.Ranges = s.fetch
		f.fetched.Store(0)
		if _, err := r.Write(ctx, storage, f.fetchFrom, 3); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(storage.b[:f.l.Size()], f.whole) || s.requests.Load() != 1 || f.fetched.Load() != f.l.Fetched() {
			t.Errorf("with ranges refused: %d range requests, %d bytes fetched whole; want one refused, all %d whole", s.requests.Load(), f.fetched.Load(), f.l.Fetched())
		}
	})

	t.Run("a range fails, and the write resumes", func(t *testing.T) {
		s := &rangeServer{f: f, failAt: big.Size - 12345 - ChunkSize} // the third range
		storage, journal := &memory{}, &memory{}
		r := f.l.Resume(journal, "file", false)
		r.Ranges = s.fetch
		_, err := r.Write(ctx, storage, f.fetchFrom, 1)
		if !errors.Is(err, errCut) {
			t.Fatalf("Write with a failing range = %v, want its error", err)
		}
		f.fetched.Store(0)
		r = f.l.Resume(journal, "file", false)
		if _, err := r.Write(ctx, storage, f.fetchFrom, 2); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(storage.b[:f.l.Size()], f.whole) {
			t.Fatal("the resumed archive differs from a clean one")
		}
		if want := big.Size - 2*ChunkSize; f.fetched.Load() > want+small {
			t.Errorf("resuming fetched %d bytes; want at most the big blob's last %d and the small blobs", f.fetched.Load(), want)
		}
	})
}

// TestStreamRanged streams an archive whose big blob comes in ranges: the
// bytes are a clean write's, no more ranges run at once than jobs, a
// source refusing ranges gets the blob whole, and a range with a wrong
// byte fails the blob's check.
func TestStreamRanged(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := newResumeFixture(t, 100<<10, 3*ChunkSize+12345, 200<<10)
	for _, tc := range []struct {
		name     string
		refuse   bool
		corrupt  bool
		requests int64
	}{
		{"in ranges", false, false, 4},
		{"ranges refused", true, false, 3}, // the first, and those started beside it
		{"a wrong byte", false, true, 4},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := &rangeServer{f: f, refuse: tc.refuse}
			fetch := f.blobs.fetch
			ranges := s.fetch
			if tc.corrupt {
				ranges = func(ctx context.Context, d v1.Descriptor, off, end int64) (io.ReadCloser, string, error) {
					rc, source, err := s.fetch(ctx, d, off, end)
					if err != nil || off != ChunkSize {
						return rc, source, err
					}
					b, _ := io.ReadAll(rc)
					b[100] ^= 1
					return io.NopCloser(bytes.NewReader(b)), source, nil
				}
			}
			var out bytes.Buffer
			err := f.l.WriteTo(ctx, &out, fetch, ranges, 3)
			switch {
			case tc.corrupt:
				if !errors.Is(err, verify.ErrMismatch) || !strings.Contains(err.Error(), "memory") {
					t.Errorf("WriteTo with a wrong byte in a range = %v, want a mismatch naming the source", err)
				}
				return
			case err != nil:
				t.Fatal(err)
			case !bytes.Equal(out.Bytes(), f.whole):
				t.Fatal("the streamed archive differs from a clean one")
			}
			if s.requests.Load() != tc.requests || s.maxSeen.Load() > 3 {
				t.Errorf("%d range requests, %d at once; want %d, at most 3", s.requests.Load(), s.maxSeen.Load(), tc.requests)
			}
		})
	}
}
