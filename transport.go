package imo

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/http"
	"strings"
)

// sideTransport is how imo reaches the registries of one side of the gap:
// the pull side (base and final images) or the push side (destination).
type sideTransport struct {
	base      http.RoundTripper
	owned     *http.Transport // base, when imo built it; closed after each operation
	plainHTTP bool
	namespace string
}

// newSideTransport builds the transport of one side from the options.
func newSideTransport(o *options, insecure, plainHTTP bool, namespace string) (*sideTransport, error) {
	st := &sideTransport{base: o.transport, plainHTTP: plainHTTP, namespace: namespace}
	if st.base != nil {
		return st, nil
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, InsecureSkipVerify: insecure} //nolint:gosec // only on request
	if o.caBundle != nil {
		pool, err := x509.SystemCertPool()
		if err != nil {
			pool = x509.NewCertPool()
		}
		pool.AppendCertsFromPEM(o.caBundle) // WithCABundle checked it holds a certificate
		cfg.RootCAs = pool
	}
	if o.clientCert != nil {
		cfg.Certificates = []tls.Certificate{*o.clientCert}
	}
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.TLSClientConfig = cfg
	t.MaxIdleConnsPerHost = max(o.jobs, 2)
	st.base, st.owned = t, t
	return st, nil
}

// forHost returns the round tripper for requests to one registry host: it
// pins the scheme of that host and adds the mirror namespace.
func (s *sideTransport) forHost(host string) http.RoundTripper {
	scheme := "https"
	if s.plainHTTP {
		scheme = "http"
	}
	return &registryTransport{next: s.base, host: host, scheme: scheme, namespace: s.namespace}
}

// closeIdle drops idle connections of a transport imo built, so that no
// connection (and no goroutine serving it) outlives an operation.
func (s *sideTransport) closeIdle() {
	if s.owned != nil {
		s.owned.CloseIdleConnections()
	}
}

// registryTransport guards and annotates requests to one registry host.
//
// go-containerregistry speaks plain HTTP to loopback and private addresses
// and falls back to it after a failed HTTPS ping; that would send
// credentials in the clear on exactly the networks where disconnected
// registries live. registryTransport refuses every request to the host in
// a scheme other than the one imo chose, so plain HTTP is used only when
// asked for, and HTTPS is not tried against a registry marked plain.
//
// With a namespace it adds ns=namespace to every registry API request to
// the host, as pull-through mirrors expect.
type registryTransport struct {
	next      http.RoundTripper
	host      string
	scheme    string
	namespace string
}

// RoundTrip implements [http.RoundTripper].
func (t *registryTransport) RoundTrip(req *http.Request) (*http.Response, error) {
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
