package sublayer

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// Prepare is the whole decision for one layer on the side that has both
// images: it detects the blob's recipe, encodes a delta against base,
// proves that the delta and recipe rebuild the blob with its digest, and
// writes the delta to w only if all of that holds and the delta is at most
// half the size of the blob.
//
// blob is the compressed layer of size bytes with digest digest. Base
// layers must have been added to base, in image order, with their blob
// digests as ids. Prepare returns an error wrapping [ErrUnsupportedEncoder]
// or [ErrNotWorthwhile] when the whole blob should ship instead; nothing is
// written to w then. The returned Stats are filled as far as known.
func Prepare(ctx context.Context, base *Base, blob io.ReaderAt, size int64, digest v1.Hash, w io.Writer) (Stats, error) {
	r, err := DetectRecipe(ctx, blob, size, digest)
	if err != nil {
		return Stats{}, fmt.Errorf("layer %s: %w", digest, err)
	}
	tmp, err := base.tempFile("delta-")
	if err != nil {
		return Stats{}, err
	}
	defer os.Remove(tmp.Name())
	defer tmp.Close()

	st, err := Encode(ctx, base, Header{Digest: digest, Size: size, Recipe: *r}, io.NewSectionReader(blob, 0, size), tmp)
	if err != nil {
		return st, fmt.Errorf("layer %s: %w", digest, err)
	}
	if st.DeltaSize*2 > size {
		return st, fmt.Errorf("layer %s: delta of %d bytes for a blob of %d: %w", digest, st.DeltaSize, size, ErrNotWorthwhile)
	}
	if _, err := tmp.Seek(0, io.SeekStart); err != nil {
		return st, err
	}
	if _, err := Rebuild(ctx, base, tmp, io.Discard); err != nil {
		return st, fmt.Errorf("layer %s: proving the round trip: %w", digest, err)
	}
	if _, err := tmp.Seek(0, io.SeekStart); err != nil {
		return st, err
	}
	if _, err := io.Copy(w, tmp); err != nil {
		return st, fmt.Errorf("layer %s: writing delta: %w", digest, err)
	}
	return st, nil
}

// Rebuild is the whole rebuild of one layer on the side that has only the
// base: it reads a delta, checks that this build's encoders are the pinned
// ones ([CheckEncoders]) and match the recipe, rebuilds the tar from base,
// recompresses it and writes the compressed blob to w, checking its size
// and digest at the end. On error, what was written to w must be
// discarded; callers that cannot discard should write to a file first.
//
// Use [ReadHeader] on a copy of the delta's start to learn which base
// layers to add before calling Rebuild.
func Rebuild(ctx context.Context, base *Base, delta io.Reader, w io.Writer) (*Header, error) {
	h, err := ReadHeader(delta)
	if err != nil {
		return nil, err
	}
	if err := CheckRecipe(&h.Recipe); err != nil {
		return h, fmt.Errorf("layer %s: %w", h.Digest, err)
	}
	hw := sha256.New()
	cw := &countWriter{w: io.MultiWriter(w, hw)}
	zw, err := h.Recipe.Compress(cw)
	if err != nil {
		return h, err
	}
	if err := applyBody(ctx, base, h, delta, zw); err != nil {
		zw.Close()
		return h, fmt.Errorf("layer %s: %w", h.Digest, err)
	}
	if err := zw.Close(); err != nil {
		return h, fmt.Errorf("layer %s: compressing: %w", h.Digest, err)
	}
	got := hex.EncodeToString(hw.Sum(nil))
	if h.Digest.Algorithm != "sha256" || got != h.Digest.Hex || cw.n != h.Size {
		return h, fmt.Errorf("layer %s: rebuilt blob is sha256:%s (%d bytes, want %d): %w", h.Digest, got, cw.n, h.Size, ErrDigestMismatch)
	}
	return h, nil
}

// CheckRecipe reports whether this build can reproduce blobs made with r:
// the encoder must be known, of the version r records, and pass its golden
// vectors (see [CheckEncoders]). The error wraps [ErrUnsupportedEncoder] or
// [ErrEncoderMismatch].
func CheckRecipe(r *Recipe) error {
	if err := r.compatible(); err != nil {
		return err
	}
	if r.Encoder == EncoderNone {
		return nil
	}
	return checkEncoders(r.Encoder)
}
