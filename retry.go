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

// wrap retries transient failures of single requests: network errors and
// the answers in retryStatusCodes. A request whose body cannot be replayed
// (no GetBody) is sent once.
func (p retryPolicy) wrap(rt http.RoundTripper) http.RoundTripper {
	return &retryTransport{next: rt, policy: p}
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
		if n >= retries || ctx.Err() != nil {
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

// transient reports whether err is a network failure worth retrying:
// a reset, refused or dropped connection, a body cut short, a timeout of
// the network (not of the caller's context). Digest mismatches, auth
// failures and missing content are permanent.
func transient(err error) bool {
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
// stalls (no byte for the policy's stall timeout while imo waits for one),
// fetches the rest: with a Range request where the registry supports it,
// otherwise by fetching the blob again and skipping what was read. The
// resume budget is per stretch without progress: bytes arriving refill it.
type resumingBody struct {
	ctx     context.Context
	c       *repoClient
	desc    v1.Descriptor
	body    io.ReadCloser
	off     int64 // bytes delivered so far
	retries int   // resumes since bytes last arrived

	cancel   context.CancelFunc // ends the current request
	stall    *time.Timer
	timedOut *atomic.Bool // the stall timer ended the current request
}

// openResumingBody starts downloading desc.
func openResumingBody(ctx context.Context, c *repoClient, desc v1.Descriptor) (*resumingBody, error) {
	r := &resumingBody{ctx: ctx, c: c, desc: desc}
	if err := r.open(); err != nil {
		return nil, err
	}
	return r, nil
}

// open starts a request for the rest of the blob, watched for stalls.
func (r *resumingBody) open() error {
	attempt, cancel := context.WithCancel(r.ctx)
	timedOut := new(atomic.Bool)
	r.cancel, r.timedOut = cancel, timedOut
	if r.c.retry.stall > 0 {
		r.stall = time.AfterFunc(r.c.retry.stall, func() {
			timedOut.Store(true)
			cancel()
		})
	}
	body, skip, err := r.c.openBlob(attempt, r.desc.Digest, r.off, r.desc.Size)
	if err != nil {
		r.release()
		return r.stalled(err)
	}
	r.unwatch()
	for buf := make([]byte, 32<<10); skip > 0; {
		r.watch()
		n, err := body.Read(buf[:min(int64(len(buf)), skip)])
		r.unwatch()
		skip -= int64(n)
		if err != nil && skip > 0 {
			body.Close()
			r.release()
			return r.stalled(fmt.Errorf("fetching blob %s from %s: skipping bytes already read: %w", r.desc.Digest, r.c.repo, err))
		}
	}
	r.body = body
	return nil
}

// watch starts timing a wait for bytes; unwatch stops it, so that time
// the reader spends elsewhere never counts as a stall.
func (r *resumingBody) watch() {
	if r.stall != nil {
		r.stall.Reset(r.c.retry.stall)
	}
}

func (r *resumingBody) unwatch() {
	if r.stall != nil {
		r.stall.Stop()
	}
}

// release stops watching the current request and ends it.
func (r *resumingBody) release() {
	r.unwatch()
	r.cancel()
}

// stalled names a request the stall timeout cancelled; such a failure is
// transient.
func (r *resumingBody) stalled(err error) error {
	if r.ctx.Err() == nil && r.timedOut.Load() {
		return fmt.Errorf("fetching blob %s from %s: no byte for %s: %w", r.desc.Digest, r.c.repo, r.c.retry.stall, errStalled)
	}
	return err
}

// errStalled marks a transfer dropped for stalling.
var errStalled = errors.New("transfer stalled")

func (r *resumingBody) Read(p []byte) (int, error) {
	for {
		r.watch()
		n, err := r.body.Read(p)
		r.unwatch()
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
		if r.ctx.Err() != nil {
			return 0, err
		}
		err = r.stalled(err)
		if !transient(err) || r.retries >= r.c.retry.retries {
			return 0, fmt.Errorf("fetching blob %s from %s, at byte %d of %d, after %d retries: %w", r.desc.Digest, r.c.repo, r.off, r.desc.Size, r.retries, err)
		}
		r.retries++
		if werr := r.c.retry.wait(r.ctx, r.retries); werr != nil {
			return 0, werr
		}
		r.body.Close()
		r.release()
		if oerr := r.open(); oerr != nil {
			r.body = io.NopCloser(errReader{fmt.Errorf("resuming blob %s at byte %d: %w", r.desc.Digest, r.off, oerr)})
			if !transient(oerr) {
				return 0, oerr
			}
		}
	}
}

// Close ends the download.
func (r *resumingBody) Close() error {
	err := r.body.Close()
	r.release()
	return err
}

type errReader struct{ err error }

func (e errReader) Read([]byte) (int, error) { return 0, e.err }
