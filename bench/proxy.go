package main

import (
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"time"
)

// slowProxy stands in front of a registry on 127.0.0.1 like a distant one:
// every request waits latency before it is forwarded, and every response
// body flows at most bandwidth bytes per second on its connection.
func slowProxy(target string, latency time.Duration, bandwidth int64) *httptest.Server {
	u, _ := url.Parse(target)
	rp := httputil.NewSingleHostReverseProxy(u)
	rp.FlushInterval = -1
	return httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-time.After(latency):
		case <-r.Context().Done():
			return
		}
		rp.ServeHTTP(&throttled{ResponseWriter: w, bandwidth: bandwidth, start: time.Now()}, r)
	}))
}

// throttled paces writes to bandwidth bytes per second.
type throttled struct {
	http.ResponseWriter
	bandwidth int64
	start     time.Time
	sent      int64
}

func (t *throttled) Write(p []byte) (int, error) {
	const chunk = 32 << 10
	written := 0
	for len(p) > 0 {
		n := min(len(p), chunk)
		m, err := t.ResponseWriter.Write(p[:n])
		written += m
		t.sent += int64(m)
		if err != nil {
			return written, err
		}
		p = p[n:]
		due := t.start.Add(time.Duration(float64(t.sent) / float64(t.bandwidth) * float64(time.Second)))
		if d := time.Until(due); d > 0 {
			time.Sleep(d)
		}
	}
	return written, nil
}

func (t *throttled) Flush() {
	if f, ok := t.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}
