package imo

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"hash"
	"io"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// verifyingReader passes bytes through while hashing and counting them. It
// fails with a [*DigestMismatchError] as soon as more bytes than promised
// arrive, and at EOF if the size or the digest is wrong, so that nothing
// downstream ever sees a short or corrupt blob end cleanly.
type verifyingReader struct {
	r      io.Reader
	h      hash.Hash
	want   v1.Descriptor
	n      int64
	source string
	report func(complete int64)
}

// newVerifyingReader checks that r yields exactly the content desc names.
// source says where the bytes come from, for the error. report, when not
// nil, is told the running byte count.
func newVerifyingReader(r io.Reader, desc v1.Descriptor, source string, report func(int64)) (io.Reader, error) {
	if desc.Digest.Algorithm != "sha256" {
		return nil, fmt.Errorf("%s in %s: unsupported digest algorithm %q", desc.Digest, source, desc.Digest.Algorithm)
	}
	return &verifyingReader{r: r, h: sha256.New(), want: desc, source: source, report: report}, nil
}

func (v *verifyingReader) Read(p []byte) (int, error) {
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

func (v *verifyingReader) mismatch(got v1.Hash) error {
	return &DigestMismatchError{Source: v.source, Want: v.want.Digest, WantSize: v.want.Size, Got: got, GotSize: v.n}
}
