package sublayer

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"sync"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// Prepare is the whole decision for one layer on the side that has both
// images: it finds the candidate recipes for the blob (the steps of
// [DetectRecipe] before its full round trip), encodes a delta against base,
// and proves that the delta rebuilds the blob. It writes the delta to w
// only if that holds and the delta is at most half the size of the blob.
// It is [StartProof] and [PrepareWith].
//
// blob is the compressed layer of size bytes with digest digest. Base
// layers must have been added to base, in image order, with their blob
// digests as ids. Prepare returns an error wrapping [ErrUnsupportedEncoder]
// or [ErrNotWorthwhile] when the whole blob should ship instead; nothing is
// written to w then. The returned Stats are filled as far as known.
func Prepare(ctx context.Context, base *Base, blob io.ReaderAt, size int64, digest v1.Hash, w io.Writer) (Stats, error) {
	pf := StartProof(ctx, blob, size, digest)
	defer pf.Stop()
	return PrepareWith(ctx, base, pf, w)
}

// PrepareWith is [Prepare] for the blob of a proof started with
// [StartProof], which may have run while the base layers were added. The
// caller stops the proof when PrepareWith returns.
//
// The proof compresses the blob's tar with the recipe, on cores of its
// own, and compares the output with the blob; PrepareWith encodes the
// delta meanwhile and applies it, with the code [Rebuild] runs, which must
// give the same tar back (by its sha256, the header's DiffID). Since a
// recipe's encoder writes the same bytes for the same input however it is
// split into writes (the golden vectors check this too), Rebuild then gives
// the blob: the tar is compressed once, not once for the proof of the
// recipe and again for the proof of the delta.
func PrepareWith(ctx context.Context, base *Base, pf *Proof, w io.Writer) (Stats, error) {
	digest, size := pf.digest, pf.size
	ectx, cancel := context.WithCancel(ctx)
	defer cancel()
	// Stop encoding as soon as the proof fails: the whole blob ships then.
	go func() {
		select {
		case <-pf.done:
			if pf.err != nil {
				cancel()
			}
		case <-ectx.Done():
		}
	}()
	failed := func(err error) error {
		if errors.Is(err, ErrUnsupportedEncoder) || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
			return fmt.Errorf("layer %s: %w", digest, err)
		}
		return fmt.Errorf("layer %s: proving the round trip: %w", digest, err)
	}

	rc, err := decompress(io.NewSectionReader(pf.blob, 0, size))
	if err != nil {
		return Stats{}, fmt.Errorf("layer %s: decompressing layer: %w", digest, err)
	}
	defer rc.Close()
	d, err := encode(ectx, base, Header{Digest: digest, Size: size}, rc, size)
	// A blob that no known encoder can have made is told first, as
	// before the delta is looked at.
	<-pf.ready
	if pf.candErr != nil && ctx.Err() == nil {
		if err == nil {
			d.Close()
		}
		return Stats{}, failed(pf.candErr)
	}
	if err != nil {
		select {
		case <-pf.done:
			if pf.err != nil && ctx.Err() == nil {
				return Stats{}, failed(pf.err)
			}
		default:
		}
		if ctx.Err() != nil {
			return Stats{}, ctx.Err()
		}
		return Stats{}, fmt.Errorf("layer %s: %w", digest, err)
	}
	defer d.Close()
	st := d.Stats
	if st.DeltaSize*2 > size {
		return st, fmt.Errorf("layer %s: delta of %d bytes for a blob of %d: %w", digest, st.DeltaSize, size, ErrNotWorthwhile)
	}

	// While the proof compresses the last of the tar, apply the delta.
	applied := applyBody(ectx, base, &st.Header, io.NewSectionReader(d.body, 0, d.bodySize), io.Discard)
	recipe, perr := pf.Wait()
	switch {
	case ctx.Err() != nil:
		return st, ctx.Err()
	case perr != nil:
		return st, failed(perr)
	case errors.Is(applied, ErrDigestMismatch):
		return st, fmt.Errorf("layer %s: %w: the delta does not rebuild the layer's tar: %v", digest, ErrUnsupportedEncoder, applied)
	case applied != nil:
		return st, fmt.Errorf("layer %s: proving the round trip: %w", digest, applied)
	}

	d.Header.Recipe = *recipe
	if err := CheckRecipe(&d.Header.Recipe); err != nil {
		return st, fmt.Errorf("layer %s: proving the round trip: %w", digest, err)
	}
	hb, err := d.header()
	if err != nil {
		return st, err
	}
	d.DeltaSize = int64(len(hb)) + d.bodySize
	st = d.Stats
	if st.DeltaSize*2 > size {
		return st, fmt.Errorf("layer %s: delta of %d bytes for a blob of %d: %w", digest, st.DeltaSize, size, ErrNotWorthwhile)
	}
	if err := d.writeTo(w); err != nil {
		return st, fmt.Errorf("layer %s: writing delta: %w", digest, err)
	}
	return st, nil
}

// Proof checks that a known encoder turns the uncompressed content of a
// blob back into the blob: it finds the candidate recipes (the steps of
// [DetectRecipe] before its round trip), then decompresses the blob on one
// goroutine and compresses the tar with every candidate on another,
// comparing each output with the blob, byte for byte and by digest, and
// dropping a candidate at its first differing byte.
type Proof struct {
	blob   io.ReaderAt
	size   int64
	digest v1.Hash
	cancel context.CancelFunc
	ready  chan struct{} // closed when the candidates are known; candErr is set then
	done   chan struct{} // closed when the proof ends; recipe or err is set then

	candErr error
	recipe  *Recipe
	err     error
}

// StartProof starts the proof for blob, of size bytes and digest digest,
// on goroutines of its own. blob must stay readable until the proof ends
// ([Proof.Wait] or [Proof.Stop]).
func StartProof(ctx context.Context, blob io.ReaderAt, size int64, digest v1.Hash) *Proof {
	ctx, cancel := context.WithCancel(ctx)
	p := &Proof{blob: blob, size: size, digest: digest, cancel: cancel, ready: make(chan struct{}), done: make(chan struct{})}
	go p.run(ctx)
	return p
}

// Wait waits for the proof to end and returns the recipe that reproduces
// the blob, or an error: one wrapping [ErrUnsupportedEncoder] when no
// known encoder does.
func (p *Proof) Wait() (*Recipe, error) {
	<-p.done
	return p.recipe, p.err
}

// Stop ends the proof if it still runs and waits for its goroutines.
func (p *Proof) Stop() {
	p.cancel()
	<-p.done
}

func (p *Proof) run(ctx context.Context) {
	defer close(p.done)
	defer p.cancel()
	cands, err := recipeCandidates(ctx, p.blob, p.size)
	p.candErr = err
	close(p.ready)
	if err != nil {
		p.err = err
		return
	}
	// Compute the candidates' golden vectors now, while little else is in
	// memory; CheckRecipe finds them done later.
	for i := range cands {
		if cands[i].Encoder != EncoderNone && (i == 0 || cands[i].Encoder != cands[i-1].Encoder) {
			_ = checkEncoders(cands[i].Encoder)
		}
	}
	rc, err := decompress(io.NewSectionReader(p.blob, 0, p.size))
	if err != nil {
		p.err = fmt.Errorf("%w: %v", ErrUnsupportedEncoder, err)
		return
	}
	defer rc.Close()
	pipe := newChunkPipe()
	rerr := make(chan error, 1)
	go func() {
		_, err := pipe.ReadFrom(&ctxReader{ctx: ctx, r: rc})
		if err == nil {
			err = pipe.closeWrite()
		} else {
			pipe.stop()
		}
		rerr <- err
	}()
	winner, err := compareAll(cands, pipe, p.blob, p.size, p.digest)
	pipe.stop()
	readErr := <-rerr
	switch {
	case ctx.Err() != nil:
		p.err = ctx.Err()
	case err != nil:
		p.err = err
	case readErr != nil && !errors.Is(readErr, errPipeClosed):
		// The blob does not decompress: no recipe can reproduce it.
		p.err = fmt.Errorf("%w: decompressing: %v", ErrUnsupportedEncoder, readErr)
	case winner < 0:
		p.err = fmt.Errorf("%w: no known encoder reproduces it", ErrUnsupportedEncoder)
	default:
		p.recipe = &cands[winner]
	}
}

// compareAll compresses the tar that comes through pipe with every
// candidate and returns the first whose output is the blob, or -1. It
// stops the pipe as soon as every candidate's output differs.
func compareAll(cands []Recipe, pipe *chunkPipe, blob io.ReaderAt, size int64, digest v1.Hash) (int, error) {
	type run struct {
		zw   io.WriteCloser
		cw   *compareWriter
		open bool
	}
	runs := make([]run, len(cands))
	defer func() {
		for _, r := range runs {
			if r.open {
				r.zw.Close()
			}
		}
	}()
	for i := range cands {
		cw := &compareWriter{blob: blob, size: size, h: sha256.New()}
		zw, err := cands[i].Compress(cw)
		if err != nil {
			return -1, err
		}
		runs[i] = run{zw: zw, cw: cw, open: true}
	}
	alive := len(runs)
	for {
		c, ok := pipe.next()
		if !ok {
			break
		}
		for i := range runs {
			r := &runs[i]
			if !r.open {
				continue
			}
			if _, err := r.zw.Write(c); err != nil || r.cw.differs() {
				r.zw.Close()
				r.open = false
				alive--
			}
		}
		pipe.release(c)
		if alive == 0 {
			return -1, nil
		}
	}
	select {
	case <-pipe.done:
		return -1, nil // stopped: the tar is not all there
	default:
	}
	winner := -1
	for i := range runs {
		r := &runs[i]
		if !r.open {
			continue
		}
		err := r.zw.Close()
		r.open = false
		if err == nil && winner < 0 && !r.cw.differs() && r.cw.matched() == size &&
			digest.Algorithm == "sha256" && hex.EncodeToString(r.cw.h.Sum(nil)) == digest.Hex {
			winner = i
		}
	}
	return winner, nil
}

// ctxReader stops reading once ctx is done.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c *ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
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
// header's recipe, returning the size and sha256 of what it wrote. The tar
// is rebuilt on one goroutine and compressed on another.
func rebuild(ctx context.Context, base *Base, h *Header, body io.Reader, w io.Writer) (int64, string, error) {
	hw := sha256.New()
	// The encoder never sees w fail: pgzip's Close returns a write error
	// before it ends its own goroutine, which would then wait for ever.
	sw := &stickyWriter{w: w}
	cw := &countWriter{w: io.MultiWriter(sw, hw)}
	zw, err := h.Recipe.Compress(cw)
	if err != nil {
		return 0, "", err
	}
	pipe := newChunkPipe()
	werr := make(chan error, 1)
	go func() {
		var err error
		for {
			c, ok := pipe.next()
			if !ok {
				break
			}
			if err == nil {
				if _, err = zw.Write(c); err == nil {
					err = sw.failed() // w failed: stop rebuilding
				}
				if err != nil {
					pipe.stop()
				}
			}
			pipe.release(c)
		}
		werr <- err
	}()
	err = applyBody(ctx, base, h, body, pipe)
	if err == nil {
		err = pipe.closeWrite()
	} else {
		pipe.stop()
	}
	if cerr := <-werr; cerr != nil && (err == nil || errors.Is(err, errPipeClosed)) {
		err = fmt.Errorf("compressing: %w", cerr)
	}
	if err != nil {
		zw.Close()
		return 0, "", err
	}
	if err := zw.Close(); err != nil {
		return 0, "", fmt.Errorf("compressing: %w", err)
	}
	if err := sw.failed(); err != nil {
		return 0, "", err
	}
	return cw.n, hex.EncodeToString(hw.Sum(nil)), nil
}

// stickyWriter writes to w until it fails, then keeps the first error and
// drops what follows, so that its writer always succeeds.
type stickyWriter struct {
	w   io.Writer
	mu  sync.Mutex
	err error
}

func (s *stickyWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err == nil {
		_, s.err = s.w.Write(p)
	}
	return len(p), nil
}

func (s *stickyWriter) failed() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
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
