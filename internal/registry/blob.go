package registry

import (
	"context"
	"errors"
	"fmt"
	"io"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// resumingBody reads a blob and, when the connection fails part-way or
// stalls (the transport ends a request that receives no byte for the stall
// timeout), fetches the rest: with a Range request where the registry
// supports it, otherwise by fetching the blob again and skipping what was
// read. The resume budget is per stretch without progress: bytes arriving
// refill it.
type resumingBody struct {
	ctx     context.Context
	c       *Repository
	desc    v1.Descriptor
	body    io.ReadCloser
	off     int64 // where the next byte delivered is in the blob
	end     int64 // where the bytes asked for end: the blob's size, or a range's end
	ranged  bool  // a range of the blob, which a registry ignoring Range cannot serve
	retries int   // resumes since bytes last arrived
}

// openResumingBody starts downloading desc from byte off.
func openResumingBody(ctx context.Context, c *Repository, desc v1.Descriptor, off int64) (*resumingBody, error) {
	r := &resumingBody{ctx: ctx, c: c, desc: desc, off: off, end: desc.Size}
	if err := r.open(); err != nil {
		return nil, err
	}
	return r, nil
}

// open starts a request for the rest of the bytes asked for.
func (r *resumingBody) open() error {
	if r.ranged {
		body, err := r.c.openRange(r.ctx, r.desc, r.off, r.end)
		if err != nil {
			return err
		}
		r.body = body
		return nil
	}
	body, skip, err := r.c.openBlob(r.ctx, r.desc.Digest, r.off, r.desc.Size)
	if err != nil {
		return err
	}
	if _, err := io.CopyN(io.Discard, body, skip); err != nil {
		body.Close()
		return fmt.Errorf("fetching blob %s from %s: skipping bytes already read: %w", r.desc.Digest, r.c.repo, err)
	}
	r.body = body
	return nil
}

func (r *resumingBody) Read(p []byte) (int, error) {
	for {
		n, err := r.body.Read(p)
		r.off += int64(n)
		if n > 0 {
			r.retries = 0
		}
		switch {
		case r.off > r.end:
			return n - int(r.off-r.end), fmt.Errorf("fetching bytes %d to %d of blob %s from %s: more bytes than asked for", r.end-int64(n), r.end, r.desc.Digest, r.c.repo)
		case err != nil && !errors.Is(err, io.EOF) && r.off == r.end:
			err = io.EOF // every byte arrived; the verifier judges them
		case errors.Is(err, io.EOF) && r.off < r.end:
			err = io.ErrUnexpectedEOF // cut short without the transport noticing
		}
		if n > 0 || err == nil || errors.Is(err, io.EOF) {
			if errors.Is(err, io.EOF) || err == nil {
				return n, err
			}
			return n, nil // deliver what arrived; the failure comes back on the next Read
		}
		if r.ctx.Err() != nil || !transient(err) || r.retries >= r.c.policy.Retries {
			return 0, fmt.Errorf("fetching blob %s from %s, at byte %d of %d, after %d retries: %w", r.desc.Digest, r.c.repo, r.off, r.desc.Size, r.retries, err)
		}
		r.retries++
		if werr := r.c.policy.wait(r.ctx, r.retries); werr != nil {
			return 0, werr
		}
		r.body.Close()
		if oerr := r.open(); oerr != nil {
			r.body = io.NopCloser(errReader{fmt.Errorf("resuming blob %s at byte %d: %w", r.desc.Digest, r.off, oerr)})
			if !transient(oerr) {
				return 0, oerr
			}
		}
	}
}

// Close ends the download.
func (r *resumingBody) Close() error { return r.body.Close() }

type errReader struct{ err error }

func (e errReader) Read([]byte) (int, error) { return 0, e.err }
