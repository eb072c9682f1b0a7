// Package verify checks content against the descriptor that names it: its
// size and its sha256 digest, as it streams or all at once.
package verify

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// ErrMismatch means bytes read from a registry or an archive do not hash to
// the digest, or do not have the size, that their descriptor promises.
// [*MismatchError] wraps it.
var ErrMismatch = errors.New("content does not match its descriptor")

// MismatchError reports content whose digest or size differs from its
// descriptor. It wraps [ErrMismatch].
type MismatchError struct {
	// Source names where the content was read: a registry repository or an archive.
	Source string
	// Want is the digest the descriptor promised.
	Want v1.Hash
	// WantSize is the size the descriptor promised.
	WantSize int64
	// Got is the digest of the bytes read; it is empty when the size was wrong.
	Got v1.Hash
	// GotSize is the number of bytes read.
	GotSize int64
}

// Error names the content, where it came from, and what was wrong with it.
func (e *MismatchError) Error() string {
	if e.GotSize != e.WantSize {
		return fmt.Sprintf("%s from %s: got %d bytes, want %d", e.Want, e.Source, e.GotSize, e.WantSize)
	}
	return fmt.Sprintf("%s from %s: bytes hash to %s", e.Want, e.Source, e.Got)
}

// Unwrap returns [ErrMismatch].
func (e *MismatchError) Unwrap() error { return ErrMismatch }

// Bytes checks b, read from source, against desc.
func Bytes(b []byte, desc v1.Descriptor, source string) error {
	if desc.Size != int64(len(b)) {
		return &MismatchError{Source: source, Want: desc.Digest, WantSize: desc.Size, GotSize: int64(len(b))}
	}
	got, _, err := v1.SHA256(bytes.NewReader(b))
	if err != nil {
		return err
	}
	if got != desc.Digest {
		return &MismatchError{Source: source, Want: desc.Digest, WantSize: desc.Size, Got: got, GotSize: desc.Size}
	}
	return nil
}

// reader passes bytes through while hashing and counting them.
type reader struct {
	r      io.Reader
	h      hash.Hash
	want   v1.Descriptor
	n      int64
	source string
	report func(complete int64)
}

// NewReader checks that r yields exactly the content desc names. It fails
// with a [*MismatchError] as soon as more bytes than promised arrive, and
// at EOF if the size or the digest is wrong, so that nothing downstream
// ever sees a short or corrupt blob end cleanly. source says where the
// bytes come from, for the error. report, when not nil, is told the
// running byte count.
func NewReader(r io.Reader, desc v1.Descriptor, source string, report func(int64)) (io.Reader, error) {
	if desc.Digest.Algorithm != "sha256" {
		return nil, fmt.Errorf("%s in %s: unsupported digest algorithm %q", desc.Digest, source, desc.Digest.Algorithm)
	}
	return &reader{r: r, h: sha256.New(), want: desc, source: source, report: report}, nil
}

func (v *reader) Read(p []byte) (int, error) {
	n, err := v.r.Read(p)
	if over := v.n + int64(n) - v.want.Size; over > 0 {
		// Pass on no byte beyond the promised size: a writer placing this
		// blob at an offset must not spill into its neighbour.
		v.n += int64(n)
		return n - int(over), v.mismatch(v1.Hash{})
	}
	v.h.Write(p[:n])
	v.n += int64(n)
	if n > 0 && v.report != nil {
		v.report(v.n)
	}
	if err == io.EOF {
		if v.n != v.want.Size {
			return n, v.mismatch(v1.Hash{})
		}
		got := v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(v.h.Sum(nil))}
		if got != v.want.Digest {
			return n, v.mismatch(got)
		}
	}
	return n, err
}

func (v *reader) mismatch(got v1.Hash) error {
	return &MismatchError{Source: v.source, Want: v.want.Digest, WantSize: v.want.Size, Got: got, GotSize: v.n}
}

// Progress passes r's bytes through, telling report, when not nil, the
// running byte count, starting from from: the progress of a blob read
// from byte from on, whose bytes the caller verifies.
func Progress(r io.Reader, from int64, report func(int64)) io.Reader {
	if report == nil {
		return r
	}
	return &progress{r: r, n: from, report: report}
}

type progress struct {
	r      io.Reader
	n      int64
	report func(int64)
}

func (p *progress) Read(b []byte) (int, error) {
	n, err := p.r.Read(b)
	if n > 0 {
		p.n += int64(n)
		p.report(p.n)
	}
	return n, err
}
