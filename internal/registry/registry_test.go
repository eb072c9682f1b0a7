package registry

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/imokit/imo/internal/verify"
)

func TestNextPage(t *testing.T) {
	cur, _ := url.Parse("https://reg.example/v2/_catalog")
	tests := []struct {
		link, want, err string
	}{
		{"", "", ""},
		{`</v2/_catalog?last=b&n=2>; rel="next"`, "https://reg.example/v2/_catalog?last=b&n=2", ""},
		{`</v2/_catalog?last=b>; rel=next`, "https://reg.example/v2/_catalog?last=b", ""},
		{`</v2/_catalog?last=b>; rel="prev"`, "", ""},
		{`<https://elsewhere.example/v2/_catalog>; rel="next"`, "", "is not on"},
		{`<http://reg.example/v2/_catalog?last=b>; rel="next"`, "", "is not on"},
		{`</v2/_catalog>; rel="next"`, "", "the page itself"},
		{`v2/_catalog; rel="next"`, "", "cannot parse"},
	}
	for _, tc := range tests {
		next, err := nextPage(cur, tc.link)
		got := ""
		if next != nil {
			got = next.String()
		}
		if got != tc.want || (tc.err == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tc.err)) {
			t.Errorf("nextPage(%q) = %q, %v; want %q, error %q", tc.link, got, err, tc.want, tc.err)
		}
	}
}

func TestTransient(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want bool
	}{
		{"reset", fmt.Errorf("reading: %w", syscall.ECONNRESET), true},
		{"cut short", io.ErrUnexpectedEOF, true},
		{"silent registry", fmt.Errorf("x: %w", errStalled), true},
		{"503", &transport.Error{StatusCode: http.StatusServiceUnavailable}, true},
		{"429", &transport.Error{StatusCode: http.StatusTooManyRequests}, true},
		{"404", &transport.Error{StatusCode: http.StatusNotFound}, false},
		{"401", &transport.Error{StatusCode: http.StatusUnauthorized}, false},
		{"digest mismatch", &verify.MismatchError{}, false},
		{"cancelled", context.Canceled, false},
		{"retried to the end", &retriedError{err: syscall.ECONNRESET, retries: 4}, false},
	}
	for _, tc := range tests {
		if got := transient(tc.err); got != tc.want {
			t.Errorf("transient(%s) = %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestAnswerError(t *testing.T) {
	req := httptest.NewRequest(http.MethodGet, "https://reg.example/v2/app/manifests/nope?X-Amz-Signature=secret", nil)
	te := &transport.Error{StatusCode: http.StatusNotFound, Request: req, Errors: []transport.Diagnostic{
		{Code: transport.ManifestUnknownErrorCode, Message: "manifest unknown", Detail: map[string]any{"Tag": "nope"}},
		{Code: transport.DeniedErrorCode, Message: "no", Detail: "read only"},
	}}
	err := fmt.Errorf("fetching: %w", answer(te))
	want := "fetching: GET https://reg.example/v2/app/manifests/nope: MANIFEST_UNKNOWN: manifest unknown; DENIED: no (read only)"
	if err.Error() != want {
		t.Errorf("answer() says %q, want %q", err, want)
	}
	if Status(err) != http.StatusNotFound || Status(errors.New("other")) != 0 {
		t.Errorf("Status() = %d, want 404", Status(err))
	}
}

// TestStallTransport checks that a silent registry is given up on after
// the stall timeout, whether it sends no headers or stops in the body,
// while a slow one that keeps sending is waited for.
func TestStallTransport(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/silent":
			<-r.Context().Done()
		case "/stops":
			w.Write([]byte("some"))
			w.(http.Flusher).Flush()
			<-r.Context().Done()
		case "/late":
			time.Sleep(300 * time.Millisecond)
			w.Write([]byte("late"))
		case "/slow":
			for range 6 {
				w.Write([]byte("x"))
				w.(http.Flusher).Flush()
				time.Sleep(40 * time.Millisecond)
			}
		}
	}))
	defer srv.Close()
	client := &http.Client{Transport: &stallTransport{next: http.DefaultTransport, timeout: 150 * time.Millisecond}}
	get := func(path string) (string, error) {
		resp, err := client.Get(srv.URL + path)
		if err != nil {
			return "", err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		return string(b), err
	}
	for _, path := range []string{"/silent", "/stops"} {
		if _, err := get(path); !errors.Is(err, errStalled) || !transient(err) {
			t.Errorf("GET %s = %v, want a transient stall", path, err)
		}
	}
	if body, err := get("/slow"); err != nil || body != "xxxxxx" {
		t.Errorf("GET /slow = %q, %v; want every byte of a slow body", body, err)
	}
	if _, err := get("/late"); !errors.Is(err, errStalled) {
		t.Errorf("GET /late = %v, want a stall", err)
	}
	req, _ := http.NewRequestWithContext(patient(context.Background()), http.MethodGet, srv.URL+"/late", nil)
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("a patient GET /late = %v, want its answer", err)
	}
	resp.Body.Close()
}

// recordingKeychain records what credentials are asked for.
type recordingKeychain struct{ asked []string }

func (k *recordingKeychain) Resolve(r authn.Resource) (authn.Authenticator, error) {
	k.asked = append(k.asked, r.String())
	return authn.Anonymous, nil
}

// TestCredentialsPerRepository checks that credentials are looked up for
// the repository opened, as docker config entries for a repository path
// expect, and for the registry for its catalog.
func TestCredentialsPerRepository(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte(`{"repositories":[]}`))
	}))
	defer srv.Close()
	kc := &recordingKeychain{}
	c := New(Config{PlainHTTP: true, Keychain: kc})
	repo, err := name.NewRepository(srv.Listener.Addr().String()+"/team/app", name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Open(context.Background(), repo); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Catalog(context.Background(), repo.Registry); err != nil {
		t.Fatal(err)
	}
	if want := []string{repo.String(), repo.RegistryStr()}; fmt.Sprint(kc.asked) != fmt.Sprint(want) {
		t.Errorf("the keychain was asked for %v, want %v", kc.asked, want)
	}
}
