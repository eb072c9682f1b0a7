package imo_test

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/imokit/imo"
	"github.com/imokit/imo/internal/sandbox"
)

// patient retries quickly, so that tests with faults stay fast.
var patient = imo.WithRetries(10, time.Millisecond)

// TestPullUnderFaults pulls through a registry that fails 10% of its
// requests and checks that the archive is byte-identical to a fault-free
// pull.
func TestPullUnderFaults(t *testing.T) {
	t.Parallel()
	total := map[string]int{}
	defer func() {
		if total[sandbox.FaultTruncate] == 0 || total[sandbox.FaultDrop] == 0 || total[sandbox.FaultStatus] == 0 {
			t.Errorf("the faults injected were only %v", total)
		}
	}()
	for seed := range uint64(6) {
		t.Run(fmt.Sprint("seed ", seed), func(t *testing.T) {
			faults := sandbox.NewFaultInjector(seed, 0, 5*time.Millisecond)
			src := newTestRegistry(t, faults.Wrap)
			pair := newAppPair(t, docker, "linux/amd64", "linux/arm64")
			src.write(t, src.ref("app:v1"), pair.V1)
			src.write(t, src.ref("app:v2"), pair.V2)
			inc := imo.New(imo.WithPlainHTTP(), patient)
			for _, base := range []string{imo.Scratch, src.ref("app:v1")} {
				clean, err := pull(t, inc, base, src.ref("app:v2"))
				if err != nil {
					t.Fatal(err)
				}
				faults.SetRate(0.1)
				faulted, err := pull(t, inc, base, src.ref("app:v2"))
				if err != nil {
					t.Fatalf("Pull() with 10%% faults = %v (injected %v)", err, faults.Injected())
				}
				if !bytes.Equal(clean, faulted) {
					t.Errorf("the archive pulled with faults differs (injected %v)", faults.Injected())
				}
				path := filepath.Join(t.TempDir(), "a.tar")
				if _, err := pullToFile(context.Background(), inc, base, src.ref("app:v2"), path); err != nil {
					t.Fatalf("PullToFile() with 10%% faults = %v (injected %v)", err, faults.Injected())
				}
				faults.SetRate(0)
				if b, _ := os.ReadFile(path); !bytes.Equal(clean, b) {
					t.Errorf("the archive PullToFile wrote with faults differs (injected %v)", faults.Injected())
				}
			}
			for k, v := range faults.Injected() {
				total[k] += v
			}
		})
	}
}

// TestPushUnderFaults pushes into a registry that fails 10% of its
// requests and checks that the destination ends up with the source digest.
func TestPushUnderFaults(t *testing.T) {
	t.Parallel()
	src, pair := setup(t, oci, "linux/amd64", "linux/arm64")
	arc := pullFile(t, imo.New(imo.WithPlainHTTP()), imo.Scratch, src.ref("app:v2"))
	total := map[string]int{}
	for seed := range uint64(6) {
		t.Run(fmt.Sprint("seed ", seed), func(t *testing.T) {
			faults := sandbox.NewFaultInjector(seed, 0.1, 5*time.Millisecond)
			dst := newTestRegistry(t, faults.Wrap)
			if err := imo.New(imo.WithPlainHTTP(), patient).Push(context.Background(), arc, dst.ref("app:v2")); err != nil {
				t.Fatalf("Push() with 10%% faults = %v (injected %v)", err, faults.Injected())
			}
			faults.SetRate(0)
			if got, err := headDigest(dst.ref("app:v2")); err != nil || got != digest(t, pair.V2) {
				t.Errorf("app:v2 = %s (%v), want %s", got, err, digest(t, pair.V2))
			}
			for k, v := range faults.Injected() {
				total[k] += v
			}
		})
	}
	if total[sandbox.FaultTruncate] == 0 || total[sandbox.FaultDrop] == 0 || total[sandbox.FaultStatus] == 0 {
		t.Errorf("the faults injected were only %v", total)
	}
}

// TestPermanentFaults checks that faults that never clear fail within the
// retry budget, with an error naming what failed, and leave no tag.
func TestPermanentFaults(t *testing.T) {
	t.Parallel()
	src, _ := setup(t, docker, "linux/amd64")
	arc := pullFile(t, imo.New(imo.WithPlainHTTP()), imo.Scratch, src.ref("app:v2"))
	faults := sandbox.NewFaultInjector(1, 1, 0)
	broken := newTestRegistry(t, faults.Wrap)
	inc := imo.New(imo.WithPlainHTTP(), imo.WithRetries(2, time.Millisecond))

	_, err := pull(t, inc, imo.Scratch, broken.ref("app:v2"))
	if err == nil || !strings.Contains(err.Error(), broken.Host) {
		t.Errorf("Pull() from a broken registry = %v, want an error naming %s", err, broken.Host)
	}
	err = inc.Push(context.Background(), arc, broken.ref("app:v2"))
	if err == nil || !strings.Contains(err.Error(), broken.Host) {
		t.Errorf("Push() into a broken registry = %v, want an error naming %s", err, broken.Host)
	}
	faults.SetRate(0)
	if _, err := headDigest(broken.ref("app:v2")); err == nil {
		t.Error("a failed push left a tag")
	}
}

// TestResumeWithRange cuts a layer download off half-way and checks that
// imo fetches only the rest, with a Range request.
func TestResumeWithRange(t *testing.T) {
	t.Parallel()
	pair := newAppPair(t, docker, "linux/amd64")
	target := pair.Changed[0]
	var cut atomic.Bool
	var ranged atomic.Value
	ranged.Store("")
	src := newTestRegistry(t, func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if strings.HasSuffix(r.URL.Path, target.String()) && r.Method == http.MethodGet {
				if r.Header.Get("Range") != "" {
					ranged.Store(r.Header.Get("Range"))
				} else if cut.CompareAndSwap(false, true) {
					sandbox.Truncate(h).ServeHTTP(w, r)
					return
				}
			}
			h.ServeHTTP(w, r)
		})
	})
	src.write(t, src.ref("app:v2"), pair.V2)
	clean, err := pull(t, imo.New(imo.WithPlainHTTP()), imo.Scratch, src.ref("app:v2"))
	if err != nil {
		t.Fatalf("Pull() with a cut-off layer = %v", err)
	}
	if r := ranged.Load().(string); !strings.HasPrefix(r, "bytes=") || r == "bytes=0-" {
		t.Errorf("the resumed download asked for Range %q, want the rest of the blob", r)
	}
	again, err := pull(t, imo.New(imo.WithPlainHTTP()), imo.Scratch, src.ref("app:v2"))
	if err != nil || !bytes.Equal(clean, again) {
		t.Errorf("a resumed pull differs from an uninterrupted one (%v)", err)
	}
}

// TestResumeAfterStall stalls a layer download half-way without closing
// the connection, and checks that imo drops it after the stall timeout and
// resumes it.
func TestResumeAfterStall(t *testing.T) {
	t.Parallel()
	pair := newAppPair(t, docker, "linux/amd64")
	target := pair.Changed[0]
	var stalledOnce atomic.Bool
	src := newTestRegistry(t, func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Method == http.MethodGet && strings.HasSuffix(r.URL.Path, target.String()) && stalledOnce.CompareAndSwap(false, true) {
				rec := httptest.NewRecorder()
				h.ServeHTTP(rec, r)
				w.Header().Set("Content-Length", fmt.Sprint(rec.Body.Len()))
				w.WriteHeader(rec.Code)
				w.Write(rec.Body.Bytes()[:rec.Body.Len()/2])
				w.(http.Flusher).Flush()
				<-r.Context().Done()
				return
			}
			h.ServeHTTP(w, r)
		})
	})
	src.write(t, src.ref("app:v2"), pair.V2)
	stalled, err := pull(t, imo.New(imo.WithPlainHTTP(), imo.WithStallTimeout(100*time.Millisecond)), imo.Scratch, src.ref("app:v2"))
	if err != nil || !stalledOnce.Load() {
		t.Fatalf("Pull() with a stalled layer = %v", err)
	}
	clean, err := pull(t, imo.New(imo.WithPlainHTTP()), imo.Scratch, src.ref("app:v2"))
	if err != nil || !bytes.Equal(stalled, clean) {
		t.Errorf("the pull that recovered from a stall differs from a clean one (%v)", err)
	}
	if n := src.count(http.MethodGet, target.String()); n != 3 {
		t.Errorf("the stalled layer was requested %d times, want 3 (stalled, resumed, clean)", n)
	}
}
