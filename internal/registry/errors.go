package registry

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"

	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
)

// answerError is an error answer of a registry, said in one line: the
// request (without its query), then each error's code and message. go-containerregistry's own
// rendering adds each error's detail as a Go value (map[Tag:v2]); only a
// detail that is text is kept.
type answerError struct{ te *transport.Error }

func (e *answerError) Error() string {
	if len(e.te.Errors) == 0 {
		return e.te.Error()
	}
	var b strings.Builder
	if e.te.Request != nil {
		u := *e.te.Request.URL
		u.RawQuery, u.User = "", nil // queries may carry signatures
		fmt.Fprintf(&b, "%s %s: ", e.te.Request.Method, u.String())
	}
	for k, d := range e.te.Errors {
		if k > 0 {
			b.WriteString("; ")
		}
		fmt.Fprintf(&b, "%s: %s", d.Code, d.Message)
		if detail, ok := d.Detail.(string); ok && detail != "" {
			fmt.Fprintf(&b, " (%s)", detail)
		}
	}
	return b.String()
}

func (e *answerError) Unwrap() error { return e.te }

// answer returns err with a registry's error answer said in one line.
func answer(err error) error {
	if te, ok := err.(*transport.Error); ok {
		return &answerError{te}
	}
	return err
}

// checkAnswer is [transport.CheckError], with the error said as
// [answerError] does.
func checkAnswer(resp *http.Response, codes ...int) error {
	return answer(transport.CheckError(resp, codes...))
}

// connectError says why the first contact with a registry failed. For
// registries on loopback and private addresses, go-containerregistry tries
// HTTPS and plain HTTP at once and reports both; imo allows only one of
// them, so a failure to reach the registry is said for that one alone.
func connectError(host string, plainHTTP bool, err error) error {
	scheme := "HTTPS"
	if plainHTTP {
		scheme = "plain HTTP"
	}
	var retried *retriedError
	var op *net.OpError
	switch {
	case errors.Is(err, errStalled) && errors.As(err, &retried):
		return fmt.Errorf("connecting to registry %s (%s): %w", host, scheme, retried)
	case errors.As(err, &op):
		if errors.As(err, &retried) {
			return fmt.Errorf("connecting to registry %s (%s): %w", host, scheme, retried)
		}
		return fmt.Errorf("connecting to registry %s (%s): %w", host, scheme, op)
	}
	return fmt.Errorf("connecting to registry %s: %w", host, err)
}

// Status is the HTTP status of the registry's error answer err carries,
// or 0 when it carries none.
func Status(err error) int {
	var te *transport.Error
	if errors.As(err, &te) {
		return te.StatusCode
	}
	return 0
}
