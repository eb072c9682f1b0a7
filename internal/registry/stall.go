package registry

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync/atomic"
	"time"
)

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
