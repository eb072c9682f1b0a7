package sublayer

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// Prepare is the whole decision for one layer on the side that has both
// images: it finds the candidate recipes for the blob (the steps of
// [DetectRecipe] before its full round trip), encodes a delta against base,
// and proves that the delta rebuilds the blob, with the code [Rebuild]
// runs, for one of the candidates. It writes the delta to w only if that
// holds and the delta is at most half the size of the blob.
//
// blob is the compressed layer of size bytes with digest digest. Base
// layers must have been added to base, in image order, with their blob
// digests as ids. Prepare returns an error wrapping [ErrUnsupportedEncoder]
// or [ErrNotWorthwhile] when the whole blob should ship instead; nothing is
// written to w then. The returned Stats are filled as far as known.
func Prepare(ctx context.Context, base *Base, blob io.ReaderAt, size int64, digest v1.Hash, w io.Writer) (Stats, error) {
	cands, err := recipeCandidates(ctx, blob, size)
	if err != nil {
		return Stats{}, fmt.Errorf("layer %s: %w", digest, err)
	}
	tmp, err := base.tempFile("delta-")
	if err != nil {
		return Stats{}, err
	}
	defer os.Remove(tmp.Name())
	defer tmp.Close()

	st, err := Encode(ctx, base, Header{Digest: digest, Size: size, Recipe: cands[0]}, io.NewSectionReader(blob, 0, size), tmp)
	if err != nil {
		return st, fmt.Errorf("layer %s: %w", digest, err)
	}
	if _, err := tmp.Seek(0, io.SeekStart); err != nil {
		return st, err
	}
	cr := &countReader{r: tmp}
	if _, err := ReadHeader(cr); err != nil {
		return st, err
	}
	body := io.NewSectionReader(tmp, cr.n, st.DeltaSize-cr.n)

	// The body does not depend on the recipe: only the header changes.
	for _, c := range cands {
		h := st.Header
		h.Recipe = c
		var hb bytes.Buffer
		if _, err := writeHeader(&hb, &h); err != nil {
			return st, err
		}
		st.Header, st.DeltaSize = h, int64(hb.Len())+body.Size()
		if st.DeltaSize*2 > size {
			return st, fmt.Errorf("layer %s: delta of %d bytes for a blob of %d: %w", digest, st.DeltaSize, size, ErrNotWorthwhile)
		}
		ok, err := prove(ctx, base, hb.Bytes(), io.NewSectionReader(body, 0, body.Size()), blob, size)
		if err != nil {
			return st, fmt.Errorf("layer %s: proving the round trip: %w", digest, err)
		}
		if !ok {
			continue
		}
		if _, err := w.Write(hb.Bytes()); err != nil {
			return st, fmt.Errorf("layer %s: writing delta: %w", digest, err)
		}
		if _, err := io.Copy(w, io.NewSectionReader(body, 0, body.Size())); err != nil {
			return st, fmt.Errorf("layer %s: writing delta: %w", digest, err)
		}
		return st, nil
	}
	return st, fmt.Errorf("layer %s: %w: no known encoder reproduces it", digest, ErrUnsupportedEncoder)
}

// prove runs the rebuild of the delta (header, then body) as [Rebuild]
// does and reports whether it gives blob, byte for byte and by digest. It
// stops early at the first byte that differs.
func prove(ctx context.Context, base *Base, header []byte, body io.Reader, blob io.ReaderAt, size int64) (bool, error) {
	r := io.MultiReader(bytes.NewReader(header), body)
	h, err := ReadHeader(r)
	if err != nil {
		return false, err
	}
	if err := CheckRecipe(&h.Recipe); err != nil {
		return false, err
	}
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	cw := &compareWriter{blob: blob, size: size, h: sha256.New(), onDiff: cancel}
	n, got, err := rebuild(rctx, base, h, r, cw)
	if cw.differs() {
		return false, nil
	}
	if err != nil {
		if ctx.Err() != nil {
			return false, ctx.Err()
		}
		return false, err
	}
	return n == size && cw.matched() == size && h.Digest.Algorithm == "sha256" && got == h.Digest.Hex, nil
}

type countReader struct {
	r io.Reader
	n int64
}

func (c *countReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// recipeCandidates returns the recipes worth a full round trip, most
// likely first.
func recipeCandidates(ctx context.Context, blob io.ReaderAt, size int64) ([]Recipe, error) {
	if size < 0 {
		return nil, fmt.Errorf("blob size %d", size)
	}
	head := make([]byte, min(size, 64<<10))
	if _, err := blob.ReadAt(head, 0); err != nil && err != io.EOF {
		return nil, fmt.Errorf("reading blob: %w", err)
	}
	cands, err := candidates(head)
	if err != nil {
		return nil, err
	}
	if len(cands) > 1 {
		if cands, err = probeStages(ctx, cands, blob, size); err != nil {
			return nil, err
		}
	}
	if len(cands) == 0 {
		return nil, fmt.Errorf("%w: no candidate survived the probe", ErrUnsupportedEncoder)
	}
	return cands, nil
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
	n, got, err := rebuild(ctx, base, h, delta, w)
	if err != nil {
		return h, fmt.Errorf("layer %s: %w", h.Digest, err)
	}
	if h.Digest.Algorithm != "sha256" || got != h.Digest.Hex || n != h.Size {
		return h, fmt.Errorf("layer %s: rebuilt blob is sha256:%s (%d bytes, want %d): %w", h.Digest, got, n, h.Size, ErrDigestMismatch)
	}
	return h, nil
}

// rebuild applies the delta body and compresses the tar into w with the
// header's recipe, returning the size and sha256 of what it wrote.
func rebuild(ctx context.Context, base *Base, h *Header, body io.Reader, w io.Writer) (int64, string, error) {
	hw := sha256.New()
	cw := &countWriter{w: io.MultiWriter(w, hw)}
	zw, err := h.Recipe.Compress(cw)
	if err != nil {
		return 0, "", err
	}
	if err := applyBody(ctx, base, h, body, zw); err != nil {
		zw.Close()
		return 0, "", err
	}
	if err := zw.Close(); err != nil {
		return 0, "", fmt.Errorf("compressing: %w", err)
	}
	return cw.n, hex.EncodeToString(hw.Sum(nil)), nil
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
