package registry

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"slices"
	"syscall"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/imokit/imo/internal/verify"
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

// Policy says how often and how patiently transient failures are
// retried: up to Retries times after the first try, waiting Wait, then
// three times longer each time, with 10% jitter; and how long a registry
// may stay silent (Stall, zero for ever) before a request is dropped and,
// as a transient failure, retried.
type Policy struct {
	Retries int
	Wait    time.Duration
	Stall   time.Duration
}

// wrap retries transient failures of single requests: network errors, the
// answers in retryStatusCodes, and requests the registry leaves unanswered
// for the stall timeout (each try is timed on its own). A request whose
// body cannot be replayed (no GetBody) is sent once. A failure that the
// retries did not cure is marked so that no caller above retries it again.
func (p Policy) wrap(rt http.RoundTripper) http.RoundTripper {
	return &retryTransport{next: &stallTransport{next: rt, timeout: p.Stall}, policy: p}
}

type retryTransport struct {
	next   http.RoundTripper
	policy Policy
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
	retries := t.policy.Retries
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
func (p Policy) do(ctx context.Context, f func() error) error {
	return p.retry(ctx, f, false)
}

// doAll is do for operations of several requests, retrying every
// transient failure, registry answers included.
func (p Policy) doAll(ctx context.Context, f func() error) error {
	return p.retry(ctx, f, true)
}

func (p Policy) retry(ctx context.Context, f func() error, answers bool) error {
	for n := 0; ; n++ {
		err := f()
		var te *transport.Error
		if !answers && errors.As(err, &te) {
			return err // the transport already retried this answer
		}
		if err == nil || n >= p.Retries || !transient(err) || ctx.Err() != nil {
			return err
		}
		if werr := p.wait(ctx, n+1); werr != nil {
			return werr
		}
	}
}

// wait sleeps before retry number n (from 1), or returns early with ctx's error.
func (p Policy) wait(ctx context.Context, n int) error {
	d := p.Wait
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
	if err == nil || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) || errors.Is(err, verify.ErrMismatch) {
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
