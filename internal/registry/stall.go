package registry

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"
)

// errStalled marks a request that the registry left without an answer, or
// a body that sent nothing, for the stall timeout.
var errStalled = errors.New("transfer stalled")

// commitAllowance is how many more stall timeouts a registry may take to
// answer an upload, per GiB it received: registries that move or hash a
// blob when it is committed (on S3, say) answer big uploads late.
const commitAllowance = 1 << 30

// patientKey marks requests whose answer a registry computes at length (a
// catalog page walks its storage): they wait patience times the stall
// timeout for it.
type patientKey struct{}

const patience = 4

// patient marks requests made with the returned context as ones whose
// answer may take patience times the stall timeout.
func patient(ctx context.Context) context.Context {
	return context.WithValue(ctx, patientKey{}, true)
}

// stallTransport ends a request when the registry is silent for timeout:
// while imo sends the request's body, while it waits for the response's
// headers (longer after a big upload, see commitAllowance, and for patient
// requests), and while it waits for the next byte of the response's body.
// Time the caller spends elsewhere, between two reads, does not count.
// Zero waits for ever.
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
	w := &stallWatch{ctx: ctx, timeout: t.timeout, answer: t.timeout,
		err: fmt.Errorf("%s sent nothing for %s: %w", req.URL.Host, t.timeout, errStalled)}
	if req.Context().Value(patientKey{}) != nil {
		w.answer = patience * t.timeout
	}
	w.timer = time.AfterFunc(w.answer, func() { cancel(w.err) })
	out := req.WithContext(ctx)
	if req.Body != nil && req.Body != http.NoBody {
		out.Body = &sentBody{ReadCloser: req.Body, w: w}
	}
	if req.GetBody != nil {
		out.GetBody = func() (io.ReadCloser, error) {
			b, err := req.GetBody()
			if err != nil {
				return nil, err
			}
			return &sentBody{ReadCloser: b, w: w}, nil
		}
	}
	resp, err := t.next.RoundTrip(out)
	w.answered()
	if err != nil {
		cancel(nil)
		return nil, w.stalled(err)
	}
	resp.Body = &watchedBody{ReadCloser: resp.Body, w: w, done: func() { cancel(nil) }}
	return resp, nil
}

// stallWatch times one request's silences.
type stallWatch struct {
	ctx     context.Context
	timeout time.Duration // for each piece of a body
	answer  time.Duration // for the response's headers
	timer   *time.Timer
	err     error

	mu   sync.Mutex
	done bool  // the response's headers arrived
	sent int64 // bytes of the request's body sent so far
}

// sending restarts the timer for the next piece of the request's body, or,
// once the body is sent (eof), for the answer, unless the answer came.
func (w *stallWatch) sending(n int, eof bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.done {
		return
	}
	w.sent += int64(n)
	d := w.timeout
	if eof {
		d = w.answer + time.Duration(w.sent/commitAllowance)*w.timeout
	}
	w.timer.Reset(d)
}

// answered stops the timer: the response's headers, or an error, came.
func (w *stallWatch) answered() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.done = true
	w.timer.Stop()
}

// stalled returns the stall error in place of err when the watch ended
// the request.
func (w *stallWatch) stalled(err error) error {
	if err == nil || !errors.Is(context.Cause(w.ctx), errStalled) || errors.Is(err, errStalled) {
		return err
	}
	return fmt.Errorf("%w (%v)", w.err, err)
}

// sentBody restarts a request's stall timer each time the transport takes
// more of the body to send: the time to send one piece, and after the last
// the wait for an answer, are each bounded.
type sentBody struct {
	io.ReadCloser
	w *stallWatch
}

func (b *sentBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	b.w.sending(n, err == io.EOF)
	return n, err
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
