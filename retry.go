package imo

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"slices"
	"sync/atomic"
	"syscall"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
)

// retryStatusCodes are the answers worth asking again: timeouts, rate
// limits and server errors that pass.
var retryStatusCodes = []int{
	http.StatusRequestTimeout,
	http.StatusTooManyRequests,
	http.StatusInternalServerError,
	http.StatusBadGateway,
	http.StatusServiceUnavailable,
	http.StatusGatewayTimeout,
}

// retryPolicy says how often and how patiently transient failures are
// retried: up to retries times after the first try, waiting initial, then
// three times longer each time, with 10% jitter.
type retryPolicy struct {
	retries int
	initial time.Duration
	stall   time.Duration // a blob download with no byte for this long is dropped and resumed
}

// wrap retries transient failures of single requests: network errors, the
// answers in retryStatusCodes, and requests the registry leaves unanswered
// for the stall timeout (each try is timed on its own). A request whose
// body cannot be replayed (no GetBody) is sent once. A failure that the
// retries did not cure is marked so that no caller above retries it again.
func (p retryPolicy) wrap(rt http.RoundTripper) http.RoundTripper {
	return &retryTransport{next: &stallTransport{next: rt, timeout: p.stall}, policy: p}
}

type retryTransport struct {
	next   http.RoundTripper
	policy retryPolicy
}

// sendOnceKey marks a request that retryTransport must not retry.
type sendOnceKey struct{}

// sendOnce marks requests made with the returned context as not to be
// retried by the transport: their caller retries at a higher level.
func sendOnce(ctx context.Context) context.Context {
	return context.WithValue(ctx, sendOnceKey{}, true)
}

// RoundTrip implements [http.RoundTripper]. A request with GetBody gets a
// fresh body on every call, so that a request sent again by a layer above
// (go-containerregistry's bearer transport after a 401) still carries its
// bytes.
func (t *retryTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	ctx := req.Context()
	replayable := req.Body == nil || req.Body == http.NoBody || req.GetBody != nil
	retries := t.policy.retries
	if ctx.Value(sendOnceKey{}) != nil || !replayable {
		retries = 0
	}
	for n := 0; ; n++ {
		if req.GetBody != nil {
			body, err := req.GetBody()
			if err != nil {
				return nil, err
			}
			req = req.Clone(ctx)
			req.Body = body
		}
		resp, err := t.next.RoundTrip(req)
		if ctx.Err() != nil {
			return resp, err
		}
		if n >= retries {
			if err != nil && retries > 0 && transient(err) {
				err = &retriedError{err: err, retries: n}
			}
			return resp, err
		}
		switch {
		case err != nil && !transient(err):
			return resp, err
		case err == nil && !slices.Contains(retryStatusCodes, resp.StatusCode):
			return resp, nil
		}
		if resp != nil {
			_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
			resp.Body.Close()
		}
		if werr := t.policy.wait(ctx, n+1); werr != nil {
			return nil, werr
		}
	}
}

// do runs f, and again after a transient failure that the transport
// could not have retried itself (a body cut short while being read), up to
// the policy's retries.
func (p retryPolicy) do(ctx context.Context, f func() error) error {
	return p.retry(ctx, f, false)
}

// doAll is do for operations of several requests, retrying every
// transient failure, registry answers included.
func (p retryPolicy) doAll(ctx context.Context, f func() error) error {
	return p.retry(ctx, f, true)
}

func (p retryPolicy) retry(ctx context.Context, f func() error, answers bool) error {
	for n := 0; ; n++ {
		err := f()
		var te *transport.Error
		if !answers && errors.As(err, &te) {
			return err // the transport already retried this answer
		}
		if err == nil || n >= p.retries || !transient(err) || ctx.Err() != nil {
			return err
		}
		if werr := p.wait(ctx, n+1); werr != nil {
			return werr
		}
	}
}

// wait sleeps before retry number n (from 1), or returns early with ctx's error.
func (p retryPolicy) wait(ctx context.Context, n int) error {
	d := p.initial
	for range n - 1 {
		d *= 3
	}
	d += time.Duration(rand.Int64N(int64(d)/10 + 1))
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// retriedError is a transient failure that the transport retried until
// its retries ran out.
type retriedError struct {
	err     error
	retries int
}

func (e *retriedError) Error() string {
	return fmt.Sprintf("%v (after %d retries)", e.err, e.retries)
}

func (e *retriedError) Unwrap() error { return e.err }

// transient reports whether err is a network failure worth retrying:
// a reset, refused or dropped connection, a body cut short, a timeout of
// the network (not of the caller's context), a registry silent for the
// stall timeout. Digest mismatches, auth failures, missing content and
// failures already retried to the end are permanent.
func transient(err error) bool {
	var retried *retriedError
	if errors.As(err, &retried) {
		return false
	}
	if errors.Is(err, errStalled) {
		return true
	}
	if err == nil || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) || errors.Is(err, ErrDigestMismatch) {
		return false
	}
	var te *transport.Error
	if errors.As(err, &te) {
		return te.Temporary() || slices.Contains(retryStatusCodes, te.StatusCode)
	}
	var ne net.Error
	return errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.ECONNREFUSED) ||
		errors.Is(err, syscall.EPIPE) || errors.Is(err, net.ErrClosed) ||
		(errors.As(err, &ne) && ne.Timeout())
}

// resumingBody reads a blob and, when the connection fails part-way or
// stalls (the transport ends a request that receives no byte for the stall
// timeout), fetches the rest: with a Range request where the registry
// supports it, otherwise by fetching the blob again and skipping what was
// read. The resume budget is per stretch without progress: bytes arriving
// refill it.
type resumingBody struct {
	ctx     context.Context
	c       *repoClient
	desc    v1.Descriptor
	body    io.ReadCloser
	off     int64 // bytes delivered so far
	retries int   // resumes since bytes last arrived
}

// openResumingBody starts downloading desc.
func openResumingBody(ctx context.Context, c *repoClient, desc v1.Descriptor) (*resumingBody, error) {
	r := &resumingBody{ctx: ctx, c: c, desc: desc}
	if err := r.open(); err != nil {
		return nil, err
	}
	return r, nil
}

// open starts a request for the rest of the blob.
func (r *resumingBody) open() error {
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
		case err != nil && !errors.Is(err, io.EOF) && r.off == r.desc.Size:
			err = io.EOF // every byte arrived; the verifier judges them
		case errors.Is(err, io.EOF) && r.off < r.desc.Size:
			err = io.ErrUnexpectedEOF // cut short without the transport noticing
		}
		if n > 0 || err == nil || errors.Is(err, io.EOF) {
			if errors.Is(err, io.EOF) || err == nil {
				return n, err
			}
			return n, nil // deliver what arrived; the failure comes back on the next Read
		}
		if r.ctx.Err() != nil || !transient(err) || r.retries >= r.c.retry.retries {
			return 0, fmt.Errorf("fetching blob %s from %s, at byte %d of %d, after %d retries: %w", r.desc.Digest, r.c.repo, r.off, r.desc.Size, r.retries, err)
		}
		r.retries++
		if werr := r.c.retry.wait(r.ctx, r.retries); werr != nil {
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

// errStalled marks a request that the registry left without an answer, or
// a body that sent nothing, for the stall timeout.
var errStalled = errors.New("transfer stalled")

// stallTransport ends a request when the registry is silent for timeout:
// while imo waits for the response's headers, and while it waits for the
// next byte of either body. Time spent elsewhere (the caller busy between
// two reads) does not count. Zero waits for ever.
type stallTransport struct {
	next    http.RoundTripper
	timeout time.Duration
}

// RoundTrip implements [http.RoundTripper].
func (t *stallTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if t.timeout <= 0 {
		return t.next.RoundTrip(req)
	}
	ctx, cancel := context.WithCancelCause(req.Context())
	w := &stallWatch{ctx: ctx, timeout: t.timeout,
		err: fmt.Errorf("%s sent nothing for %s: %w", req.URL.Host, t.timeout, errStalled)}
	w.timer = time.AfterFunc(t.timeout, func() { cancel(w.err) })
	out := req.WithContext(ctx)
	if req.Body != nil && req.Body != http.NoBody {
		out.Body = &sentBody{ReadCloser: req.Body, w: w}
	}
	resp, err := t.next.RoundTrip(out)
	w.answered.Store(true)
	w.timer.Stop()
	if err != nil {
		cancel(nil)
		return nil, w.stalled(err)
	}
	resp.Body = &watchedBody{ReadCloser: resp.Body, w: w, done: func() { cancel(nil) }}
	return resp, nil
}

// stallWatch times one request's silences.
type stallWatch struct {
	ctx      context.Context
	timeout  time.Duration
	timer    *time.Timer
	err      error
	answered atomic.Bool // the response's headers arrived
}

// stalled returns the stall error in place of err when the watch ended
// the request.
func (w *stallWatch) stalled(err error) error {
	if err != nil && errors.Is(context.Cause(w.ctx), errStalled) {
		return fmt.Errorf("%w (%v)", w.err, err)
	}
	return err
}

// sentBody restarts a request's stall timer each time the transport takes
// more of the body to send: the time to send one piece, and after the last
// the wait for an answer, are each bounded.
type sentBody struct {
	io.ReadCloser
	w *stallWatch
}

func (b *sentBody) Read(p []byte) (int, error) {
	if !b.w.answered.Load() {
		b.w.timer.Reset(b.w.timeout)
	}
	return b.ReadCloser.Read(p)
}

// watchedBody times each read of a response's body.
type watchedBody struct {
	io.ReadCloser
	w    *stallWatch
	done func() // ends the request
}

func (b *watchedBody) Read(p []byte) (int, error) {
	b.w.timer.Reset(b.w.timeout)
	n, err := b.ReadCloser.Read(p)
	b.w.timer.Stop()
	return n, b.w.stalled(err)
}

func (b *watchedBody) Close() error {
	b.w.timer.Stop()
	err := b.ReadCloser.Close()
	b.done()
	return err
}
