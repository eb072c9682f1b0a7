package sandbox

import (
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"time"
)

// The faults a [FaultInjector] injects.
const (
	FaultStatus   = "status"   // answer 429, 500, 502, 503 or 504 instead of serving
	FaultDrop     = "drop"     // close the connection without answering
	FaultTruncate = "truncate" // cut the body off half-way and close the connection: a download's answer, or an upload's request
	FaultStall    = "stall"    // wait a while, then serve
)

// FaultInjector makes a share of a registry's requests fail, choosing
// which and how from a generator with a fixed seed, so that a run can be
// repeated.
type FaultInjector struct {
	mu       sync.Mutex
	rng      *rand.Rand
	rate     float64
	stall    time.Duration
	injected map[string]int
}

// NewFaultInjector faults rate (0 to 1) of the requests, with faults drawn
// from a generator seeded with seed. Stalls last stall; with stall 0 there
// are none, so that every faulted request fails.
func NewFaultInjector(seed uint64, rate float64, stall time.Duration) *FaultInjector {
	return &FaultInjector{rng: rand.New(rand.NewPCG(seed, 0)), rate: rate, stall: stall, injected: map[string]int{}}
}

// SetRate changes the share of requests that fail.
func (f *FaultInjector) SetRate(rate float64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.rate = rate
}

// Injected returns how many faults of each kind were injected.
func (f *FaultInjector) Injected() map[string]int {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make(map[string]int, len(f.injected))
	for k, v := range f.injected {
		out[k] = v
	}
	return out
}

// draw decides the fault for one request, or "" for none.
func (f *FaultInjector) draw(r *http.Request) (kind string, status int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.rng.Float64() >= f.rate {
		return "", 0
	}
	kinds := []string{FaultStatus, FaultDrop}
	if f.stall > 0 {
		kinds = append(kinds, FaultStall)
	}
	if r.Method == http.MethodGet || r.ContentLength > 0 {
		kinds = append(kinds, FaultTruncate, FaultTruncate)
	}
	kind = kinds[f.rng.IntN(len(kinds))]
	f.injected[kind]++
	statuses := []int{http.StatusTooManyRequests, http.StatusInternalServerError, http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout}
	return kind, statuses[f.rng.IntN(len(statuses))]
}

// Wrap returns h with faults injected.
func (f *FaultInjector) Wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		kind, status := f.draw(r)
		switch kind {
		case FaultStatus:
			http.Error(w, "injected fault", status)
		case FaultDrop:
			panic(http.ErrAbortHandler)
		case FaultStall:
			select {
			case <-time.After(f.stall):
			case <-r.Context().Done():
				return
			}
			h.ServeHTTP(w, r)
		case FaultTruncate:
			if r.Method != http.MethodGet {
				// An upload cut off half-way: read half of it, then drop
				// the connection without answering.
				_, _ = io.CopyN(io.Discard, r.Body, r.ContentLength/2)
				panic(http.ErrAbortHandler)
			}
			Truncate(h).ServeHTTP(w, r)
		default:
			h.ServeHTTP(w, r)
		}
	})
}

// Truncate serves with h, but sends only the first half of the body (with
// the whole body's Content-Length) and then closes the connection, as a
// network failure mid-body does.
func Truncate(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, r)
		body := rec.Body.Bytes()
		for k, v := range rec.Header() {
			w.Header()[k] = v
		}
		w.Header().Set("Content-Length", strconv.Itoa(len(body)))
		w.WriteHeader(rec.Code)
		w.Write(body[:len(body)/2])
		if fl, ok := w.(http.Flusher); ok {
			fl.Flush()
		}
		panic(http.ErrAbortHandler)
	})
}
