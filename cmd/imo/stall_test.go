package main

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/imokit/imo/internal/sandbox"
)

// silentOn makes a registry take in the requests match picks and never
// answer them, until the client gives up, once armed is set.
func silentOn(armed *atomic.Bool, match func(*http.Request) bool) func(http.Handler) http.Handler {
	return func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if armed.Load() && match(r) {
				io.Copy(io.Discard, r.Body) // so that the server notices the client leave
				<-r.Context().Done()
				return
			}
			h.ServeHTTP(w, r)
		})
	}
}

// silentListener accepts connections on 127.0.0.1 and never reads or
// writes a byte on them.
func silentListener(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var conns []net.Conn
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			conns = append(conns, c)
		}
	}()
	t.Cleanup(func() {
		l.Close()
		<-done
		for _, c := range conns {
			c.Close()
		}
	})
	return l.Addr().String()
}

// TestStallTimeoutBoundsEveryWait checks that --stall-timeout bounds every
// wait for a registry's answer: the first contact, a token request, a
// manifest, a blob check, an upload's answer. Each command must fail,
// naming the silent host, instead of waiting for ever.
func TestStallTimeoutBoundsEveryWait(t *testing.T) {
	src, _, _ := registries(t, nil, nil)
	archive := filepath.Join(t.TempDir(), "app.tar")
	if r := imoCmd(t, "", "pull", "--plain-http", "-q", src.Ref("app:v1"), src.Ref("app:v2"), "-o", archive); r.code != 0 {
		t.Fatal(r)
	}
	silent := silentListener(t)
	var armed atomic.Bool
	silentToken := sandbox.NewRegistry(func(h http.Handler) http.Handler {
		return silentOn(&armed, func(r *http.Request) bool { return r.URL.Path == "/token" })(sandbox.TokenAuth("alice", "pw")(h))
	}, nil)
	t.Cleanup(silentToken.Close)
	silentManifests, _, _ := registries(t, silentOn(&armed, func(r *http.Request) bool {
		return strings.Contains(r.URL.Path, "/manifests/")
	}), nil)
	silentHeads, _, _ := registries(t, silentOn(&armed, func(r *http.Request) bool {
		return r.Method == http.MethodHead && strings.Contains(r.URL.Path, "/blobs/")
	}), nil)
	silentUploads, _, _ := registries(t, silentOn(&armed, func(r *http.Request) bool { return r.Method == http.MethodPut }), nil)

	armed.Store(true)
	fast := []string{"--plain-http", "--stall-timeout", "300ms", "--retries", "1", "--retry-wait", "1ms"}
	tests := []struct {
		name   string
		args   []string
		silent string
	}{
		{"first contact", []string{"pull", "-q", "scratch", silent + "/app:v2", "-o", filepath.Join(t.TempDir(), "a.tar")}, silent},
		{"token request", []string{"pull", "-q", "--creds", "alice:pw", "scratch", silentToken.Ref("app:v2"), "-o", filepath.Join(t.TempDir(), "a.tar")}, silentToken.Host},
		{"manifest", []string{"pull", "-q", "scratch", silentManifests.Ref("app:v2"), "-o", filepath.Join(t.TempDir(), "a.tar")}, silentManifests.Host},
		{"manifest command", []string{"manifest", silent + "/app:v2"}, silent},
		{"inventory", []string{"inventory", "-q", silent, "app"}, silent},
		{"blob check", []string{"vet", "-q", archive, silentHeads.Ref("app:v2")}, silentHeads.Host},
		{"upload answer", []string{"push", "-q", archive, silentUploads.Ref("app:v2")}, silentUploads.Host},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			args := append([]string{tc.args[0]}, fast...)
			args = append(args, tc.args[1:]...)
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			var out, errOut bytes.Buffer
			code := run(ctx, args, strings.NewReader(""), &out, &errOut)
			if ctx.Err() != nil {
				t.Fatalf("imo %v still waited after a minute:\n%s", args, errOut.String())
			}
			if code != exitError || !strings.Contains(errOut.String(), tc.silent) || !strings.Contains(errOut.String(), "sent nothing for 300ms") {
				t.Errorf("imo %v: want exit 1 naming %s as silent:\nexit %d\n%s", args, tc.silent, code, errOut.String())
			}
		})
	}
}
