package registry

import (
	"fmt"
	"net/http"
	"strings"
)

// hostTransport guards and annotates requests to one registry host.
//
// go-containerregistry speaks plain HTTP to loopback and private addresses
// and falls back to it after a failed HTTPS ping; that would send
// credentials in the clear on exactly the networks where disconnected
// registries live. hostTransport refuses every request to the host in a
// scheme other than the one imo chose, so plain HTTP is used only when
// asked for, and HTTPS is not tried against a registry marked plain.
//
// With a namespace it adds ns=namespace to every registry API request to
// the host, as pull-through mirrors expect.
type hostTransport struct {
	next      http.RoundTripper
	host      string
	scheme    string
	namespace string
}

// RoundTrip implements [http.RoundTripper].
func (t *hostTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.URL.Host != t.host {
		return t.next.RoundTrip(req)
	}
	if req.URL.Scheme != t.scheme {
		if req.Body != nil {
			req.Body.Close()
		}
		if t.scheme == "https" {
			return nil, fmt.Errorf("refusing plain HTTP to %s: imo uses HTTPS unless plain HTTP is asked for", t.host)
		}
		return nil, fmt.Errorf("not trying HTTPS on %s: it is marked plain HTTP", t.host)
	}
	if t.namespace == "" || !strings.HasPrefix(req.URL.Path, "/v2/") || req.URL.Query().Has("ns") {
		return t.next.RoundTrip(req)
	}
	out := req.Clone(req.Context())
	q := out.URL.Query()
	q.Set("ns", t.namespace)
	out.URL.RawQuery = q.Encode()
	return t.next.RoundTrip(out)
}
