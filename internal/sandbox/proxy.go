package sandbox

import (
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
)

// Proxy is a plain-HTTP reverse proxy on 127.0.0.1 in front of a registry,
// counting the requests it forwards, so that tests can count what a client
// sends to a registry that does not count for itself.
type Proxy struct {
	*httptest.Server
	// Host is the proxy's host:port.
	Host string

	mu       sync.Mutex
	requests []string // "METHOD path?query", unescaped
}

// NewProxy starts a proxy to the plain-HTTP registry at host. Close it
// when done.
func NewProxy(host string) *Proxy {
	p := &Proxy{}
	rp := httputil.NewSingleHostReverseProxy(&url.URL{Scheme: "http", Host: host})
	rp.ErrorLog = log.New(io.Discard, "", 0)
	p.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		uri, err := url.QueryUnescape(req.URL.RequestURI())
		if err != nil {
			uri = req.URL.RequestURI()
		}
		p.mu.Lock()
		p.requests = append(p.requests, req.Method+" "+uri)
		p.mu.Unlock()
		rp.ServeHTTP(w, req)
	}))
	p.Host = p.Listener.Addr().String()
	return p
}

// Count returns how many requests used method and contained substr in
// their path or query, unescaped.
func (p *Proxy) Count(method, substr string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return countRequests(p.requests, method, substr)
}

func countRequests(requests []string, method, substr string) int {
	n := 0
	for _, q := range requests {
		if strings.HasPrefix(q, method+" ") && strings.Contains(q, substr) {
			n++
		}
	}
	return n
}
