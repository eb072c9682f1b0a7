package archive

import (
	"bytes"
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"sync/atomic"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// resumeFixture is a laid-out archive of random layers, its bytes, and a
// fetch that counts the bytes it serves and can cut one blob short.
type resumeFixture struct {
	l       *Layout
	whole   []byte
	layers  []v1.Descriptor
	blobs   testBlobs
	fetched atomic.Int64
	cut     v1.Hash // the blob to cut short
	cutAt   int64
}

var errCut = errors.New("the connection is gone")

func newResumeFixture(t *testing.T, sizes ...int) *resumeFixture {
	t.Helper()
	f := &resumeFixture{blobs: testBlobs{}}
	rng := rand.New(rand.NewPCG(7, uint64(len(sizes))))
	for _, n := range sizes {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		f.layers = append(f.layers, f.blobs.add(types.OCILayer, b))
	}
	var err error
	if f.l, err = Build(oneImage(t, f.blobs, f.layers, nil)); err != nil {
		t.Fatal(err)
	}
	var whole bytes.Buffer
	if err := f.l.WriteTo(context.Background(), &whole, f.blobs.fetch, nil, 2); err != nil {
		t.Fatal(err)
	}
	f.whole = whole.Bytes()
	return f
}

// fetchFrom serves blobs from off, counting bytes, and cuts f.cut short.
func (f *resumeFixture) fetchFrom(_ context.Context, d v1.Descriptor, off int64) (io.ReadCloser, string, error) {
	b := f.blobs[d.Digest][off:]
	if d.Digest == f.cut {
		return io.NopCloser(io.MultiReader(&countReader{r: bytes.NewReader(b[:f.cutAt-off]), n: &f.fetched}, errReader{errCut})), "memory", nil
	}
	return io.NopCloser(&countReader{r: bytes.NewReader(b), n: &f.fetched}), "memory", nil
}

type countReader struct {
	r io.Reader
	n *atomic.Int64
}

func (c *countReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n.Add(int64(n))
	return n, err
}

type errReader struct{ err error }

func (e errReader) Read([]byte) (int, error) { return 0, e.err }

// TestResume interrupts a write in the middle of a blob, and resumes it:
// only the rest is fetched, and the archive is the one a clean write makes.
func TestResume(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	tests := []struct {
		name      string
		salt      string
		fresh     bool
		damage    bool // flip a byte the first attempt wrote of the cut blob
		truncate  bool // cut the storage short inside what the first attempt wrote of it
		wantKept  bool
		discarded string
	}{
		{"resumed", "file", false, false, false, true, ""},
		{"stored otherwise", "volumes 1 0", false, false, false, false, "other images"},
		{"asked to start afresh", "file", true, false, false, false, "afresh"},
		{"the kept part damaged", "file", false, true, false, false, ""},
		{"the storage shorter than the journal says", "file", false, false, true, false, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := newResumeFixture(t, 300<<10, 5<<20, 100<<10)
			f.cut, f.cutAt = f.layers[1].Digest, 2<<20+12345
			storage, journal := &memory{}, &memory{}
			res, err := f.l.Resume(journal, "file", false).Write(ctx, storage, f.fetchFrom, 2)
			if !errors.Is(err, errCut) || res.Written < f.cutAt {
				t.Fatalf("the first attempt = %+v, %v; want it cut, with the bytes before the cut written", res, err)
			}
			for _, e := range f.l.Entries() {
				switch {
				case e.Name != BlobName(f.cut):
				case tc.damage:
					storage.b[e.Offset+1000] ^= 1
				case tc.truncate:
					storage.b = storage.b[:e.Offset+1000]
				}
			}
			f.cut, f.fetched = v1.Hash{}, atomic.Int64{}
			r := f.l.Resume(journal, tc.salt, tc.fresh)
			claimed := r.Claimed()
			res, err = r.Write(ctx, storage, f.fetchFrom, 2)
			if err != nil {
				t.Fatal(err)
			}
			if got := storage.b[:f.l.Size()]; !bytes.Equal(got, f.whole) {
				t.Fatal("the resumed archive differs from a clean one")
			}
			fetchedAll := f.l.Fetched()
			switch {
			case tc.wantKept && (res.Kept != fetchedAll-(f.layers[1].Size-f.cutAt) || f.fetched.Load() != f.layers[1].Size-f.cutAt || claimed != res.Kept):
				t.Errorf("resuming kept %d (claimed %d) and fetched %d bytes; want the %d bytes before the cut and the finished blobs kept, the rest fetched", res.Kept, claimed, f.fetched.Load(), f.cutAt)
			case tc.damage && f.fetched.Load() != 2*f.layers[1].Size-f.cutAt:
				// The damage shows only once the blob is whole: its rest, then
				// all of it again.
				t.Errorf("resuming with the kept part damaged fetched %d bytes, want the rest of the blob and then all of it (%d)", f.fetched.Load(), 2*f.layers[1].Size-f.cutAt)
			case !tc.wantKept && !tc.damage && !tc.truncate && (f.fetched.Load() != fetchedAll || res.Kept != 0):
				t.Errorf("starting afresh fetched %d bytes and kept %d; want all %d fetched", f.fetched.Load(), res.Kept, fetchedAll)
			}
			if !bytes.Contains([]byte(r.Discarded), []byte(tc.discarded)) || (tc.discarded == "") != (r.Discarded == "") {
				t.Errorf("Discarded = %q, want it to say %q", r.Discarded, tc.discarded)
			}
		})
	}
}
