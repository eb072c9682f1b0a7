package imo_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/imokit/imo"
	"github.com/imokit/imo/internal/sandbox"
)

func TestInvalidOptions(t *testing.T) {
	p384, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		opts []imo.Option
	}{
		{"zero jobs", []imo.Option{imo.WithJobs(0)}},
		{"platforms and all architectures", []imo.Option{imo.WithAllArchitectures(), imo.WithPlatforms(v1.Platform{OS: "linux", Architecture: "amd64"})}},
		{"transport and TLS", []imo.Option{imo.WithTransport(http.DefaultTransport), imo.WithInsecure()}},
		{"CA bundle without a certificate", []imo.Option{imo.WithCABundle([]byte("not PEM"))}},
		{"bad namespace", []imo.Option{imo.WithNamespace("not a host!")}},
		{"nil keychain", []imo.Option{imo.WithKeychain(nil)}},
		{"a P-384 signer", []imo.Option{imo.WithSigner(p384)}},
		{"a nil verify key", []imo.Option{imo.WithVerifyKeys(nil)}},
		{"a typed-nil ECDSA verify key", []imo.Option{imo.WithVerifyKeys((*ecdsa.PublicKey)(nil))}},
		{"a short Ed25519 verify key", []imo.Option{imo.WithVerifyKeys(ed25519.PublicKey{1, 2, 3})}},
		{"an ECDSA verify key without a curve", []imo.Option{imo.WithVerifyKeys(&ecdsa.PublicKey{})}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			inc := imo.New(tc.opts...)
			if _, err := inc.Pull(context.Background(), imo.Scratch, "example.com/app:v1"); !errors.Is(err, imo.ErrInvalidOption) {
				t.Errorf("Pull() = %v, want ErrInvalidOption", err)
			}
			if err := inc.Push(context.Background(), "difference.tar", "example.com/app:v1"); !errors.Is(err, imo.ErrInvalidOption) {
				t.Errorf("Push() = %v, want ErrInvalidOption", err)
			}
		})
	}
}

// pushImage puts a small image into a registry that needs TLS or auth,
// through go-containerregistry with the given options.
func pushImage(t *testing.T, ref string, opts ...remote.Option) v1.Hash {
	t.Helper()
	pair := newAppPair(t, docker, "linux/amd64")
	r, err := name.ParseReference(ref)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(r, pair.V2.(v1.Image), opts...); err != nil {
		t.Fatalf("writing %s: %v", ref, err)
	}
	return digest(t, pair.V2)
}

func TestTLS(t *testing.T) {
	t.Parallel()
	ca := newTestCA(t)
	serverCert := ca.issue(t, x509.ExtKeyUsageServerAuth)
	clientCert := ca.issue(t, x509.ExtKeyUsageClientAuth)
	tlsReg := newTLSRegistry(t, nil, &tls.Config{Certificates: []tls.Certificate{serverCert}})
	mtlsReg := newTLSRegistry(t, nil, &tls.Config{Certificates: []tls.Certificate{serverCert}, ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: ca.pool()})
	trusting := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.pool(), Certificates: []tls.Certificate{clientCert}}}
	pushImage(t, tlsReg.ref("app:v2"), remote.WithTransport(trusting))
	pushImage(t, mtlsReg.ref("app:v2"), remote.WithTransport(trusting))
	plain := newTestRegistry(t, nil)
	plain.write(t, plain.ref("app:v2"), newAppPair(t, docker, "linux/amd64").V2)

	tests := []struct {
		name    string
		ref     string
		opts    []imo.Option
		wantErr string
	}{
		{"custom CA", tlsReg.ref("app:v2"), []imo.Option{imo.WithCABundle(ca.PEM)}, ""},
		{"unknown CA", tlsReg.ref("app:v2"), nil, "certificate"},
		{"insecure", tlsReg.ref("app:v2"), []imo.Option{imo.WithInsecurePull()}, ""},
		{"insecure push only", tlsReg.ref("app:v2"), []imo.Option{imo.WithInsecurePush()}, "certificate"},
		{"mTLS", mtlsReg.ref("app:v2"), []imo.Option{imo.WithCABundle(ca.PEM), imo.WithClientCertificate(clientCert)}, ""},
		{"mTLS without a client certificate", mtlsReg.ref("app:v2"), []imo.Option{imo.WithCABundle(ca.PEM)}, "certificate"},
		// go-containerregistry would fall back to plain HTTP for 127.0.0.1; imo does not.
		{"no fallback to plain HTTP", plain.ref("app:v2"), nil, "HTTP response to HTTPS client"},
		{"plain HTTP on request", plain.ref("app:v2"), []imo.Option{imo.WithPlainHTTP()}, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := planOf(context.Background(), imo.New(tc.opts...), imo.Scratch, tc.ref)
			switch {
			case tc.wantErr == "" && err != nil:
				t.Errorf("Plan() = %v", err)
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Errorf("Plan() = %v, want an error mentioning %q", err, tc.wantErr)
			}
		})
	}
	if n := plain.count(http.MethodGet, "/manifests/"); n != 1 {
		t.Errorf("the plain-HTTP registry served %d manifest requests, want 1 (only when asked)", n)
	}
}

func TestAuth(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		wrap func(string, string) func(http.Handler) http.Handler
	}{{"basic", sandbox.BasicAuth}, {"token", sandbox.TokenAuth}} {
		t.Run(tc.name, func(t *testing.T) {
			src := newTestRegistry(t, tc.wrap("alice", "s3cret"))
			dst := newTestRegistry(t, tc.wrap("bob", "hunter2"))
			want := pushImage(t, src.ref("app:v2"), remote.WithAuth(&authn.Basic{Username: "alice", Password: "s3cret"}))

			bad := imo.New(imo.WithPlainHTTP(), imo.WithFinalAuth("alice", "wrong"))
			if _, err := planOf(context.Background(), bad, imo.Scratch, src.ref("app:v2")); err == nil || strings.Contains(err.Error(), "wrong") {
				t.Errorf("Plan(wrong password) = %v, want an error that does not show the password", err)
			}
			inc := imo.New(imo.WithPlainHTTP(), imo.WithFinalAuth("alice", "s3cret"), imo.WithPushAuth("bob", "hunter2"))
			arc := pullFile(t, inc, imo.Scratch, src.ref("app:v2"))
			if err := inc.Push(context.Background(), arc, dst.ref("app:v2")); err != nil {
				t.Fatalf("Push() = %v", err)
			}
			d, err := remote.Head(mustRef(t, dst.ref("app:v2")), remote.WithAuth(&authn.Basic{Username: "bob", Password: "hunter2"}))
			if err != nil || d.Digest != want {
				t.Errorf("destination holds %v (%v), want %s", d, err, want)
			}
		})
	}
}

func TestNamespace(t *testing.T) {
	t.Parallel()
	var without atomic.Int32
	mirror := newTestRegistry(t, func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Query().Get("ns") != "quay.io" {
				without.Add(1)
			}
			h.ServeHTTP(w, r)
		})
	})
	pair := newAppPair(t, oci, "linux/amd64", "linux/arm64")
	ref := mustRef(t, mirror.ref("curl/curl:8.10.1"))
	if err := remote.WriteIndex(ref, pair.V2.(v1.ImageIndex)); err != nil {
		t.Fatal(err)
	}
	without.Store(0)
	mirror.resetCounts()
	if _, err := pull(t, imo.New(imo.WithPlainHTTP(), imo.WithNamespace("quay.io")), imo.Scratch, mirror.ref("curl/curl:8.10.1")); err != nil {
		t.Fatalf("Pull() = %v", err)
	}
	if n := without.Load(); n != 0 {
		t.Errorf("%d requests reached the mirror without ns=quay.io", n)
	}
	if n := mirror.count(http.MethodGet, "ns=quay.io"); n == 0 {
		t.Error("no request carried ns=quay.io")
	}
}

// TestNoCredentialsOnRedirect checks that a registry redirecting blob
// downloads to another host (as registries backed by object storage do)
// does not get the credentials forwarded there.
func TestNoCredentialsOnRedirect(t *testing.T) {
	t.Parallel()
	var leaked atomic.Int32
	var storageHandler http.Handler
	storage := newTestRegistry(t, func(http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Header.Get("Authorization") != "" {
				leaked.Add(1)
			}
			storageHandler.ServeHTTP(w, r)
		})
	})
	src := newTestRegistry(t, func(h http.Handler) http.Handler {
		storageHandler = h
		auth := sandbox.BasicAuth("alice", "s3cret")(h)
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Method == http.MethodGet && strings.Contains(r.URL.Path, "/blobs/sha256:") && r.Header.Get("Authorization") != "" {
				http.Redirect(w, r, storage.URL+r.URL.Path, http.StatusTemporaryRedirect)
				return
			}
			auth.ServeHTTP(w, r)
		})
	})
	pushImage(t, src.ref("app:v2"), remote.WithAuth(&authn.Basic{Username: "alice", Password: "s3cret"}))
	storage.resetCounts()
	if _, err := pull(t, imo.New(imo.WithPlainHTTP(), imo.WithFinalAuth("alice", "s3cret")), imo.Scratch, src.ref("app:v2")); err != nil {
		t.Fatalf("Pull() = %v", err)
	}
	if storage.count(http.MethodGet, "/blobs/") == 0 {
		t.Fatal("no blob download was redirected")
	}
	if n := leaked.Load(); n != 0 {
		t.Errorf("%d redirected requests carried the credentials", n)
	}
}
