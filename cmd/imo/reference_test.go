package main

import (
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/imokit/imo/internal/sandbox"
)

// TestDestinations checks where push sends an image for each way of
// writing DEST, and that it never goes to a registry the user did not name.
func TestDestinations(t *testing.T) {
	t.Parallel()
	src, _, pair := registries(t, nil, nil)
	v1d, v2d := digest(t, pair.V1), digest(t, pair.V2)
	dir := t.TempDir()
	whole := filepath.Join(dir, "whole.tar")
	if r := imoCmd(t, "", "pull", "--plain-http", "-q", "scratch", src.Ref("app:v2"), "-o", whole); r.code != 0 {
		t.Fatal(r)
	}
	r := imoCmd(t, "", "inspect", whole)
	if m := regexp.MustCompile(`(?m)^base\s+(.*?)\s*$`).FindStringSubmatch(r.stdout); m == nil || m[1] != "scratch" {
		t.Errorf("imo inspect of a whole image: want a base line of scratch alone:\n%s", r)
	}
	byDigest := filepath.Join(dir, "by-digest.tar")
	if r := imoCmd(t, "", "pull", "--plain-http", "-q", "scratch", src.Ref("app@"+v2d.String()), "-o", byDigest); r.code != 0 {
		t.Fatal(r)
	}

	tests := []struct {
		name, archive, dst string
		want               string // the reference printed, "" when it must fail
		code               int
		note               string // on stderr
	}{
		{"host:port alone is a target", whole, "HOST", "HOST/app:v2@" + v2d.String(), 0, ""},
		{"no tag takes the source's", whole, "HOST/site/app", "HOST/site/app:v2@" + v2d.String(), 0, "names no tag: the image goes to"},
		{"no tag and a source by digest", byDigest, "HOST/site/pinned", "HOST/site/pinned@" + v2d.String(), 0, "goes by digest alone"},
		{"tag and digest", whole, "HOST/site/app:td@" + v2d.String(), "HOST/site/app:td@" + v2d.String(), 0, ""},
		{"tag and another digest", whole, "HOST/site/app:td@" + v1d.String(), "", exitError, "names a digest"},
		{"no registry", whole, "app:v2", "", exitUsage, "names no registry"},
		{"upper-case repository", whole, "HOST/App:v2", "", exitUsage, "repository can only contain"},
		{"tag too long", whole, "HOST/app:" + strings.Repeat("t", 129), "", exitUsage, "tag must be between 1 and 128 characters"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			site := newSite(t)
			dst := strings.ReplaceAll(tc.dst, "HOST", site.Host)
			r := imoCmd(t, "", "push", "--plain-http", "-q", tc.archive, dst)
			want := strings.ReplaceAll(tc.want, "HOST", site.Host)
			if r.code != tc.code || strings.TrimSpace(r.stdout) != want || !strings.Contains(r.stderr, tc.note) {
				t.Fatalf("imo push %s: want exit %d, %q and %q on stderr:\n%s", dst, tc.code, want, tc.note, r)
			}
			if want == "" {
				if n := requests(site); n != 0 {
					t.Errorf("a refused push sent %d requests", n)
				}
				return
			}
			got, err := headDigest(strings.Split(want, "@")[0])
			if strings.Contains(strings.Split(want, "@")[0][len(site.Host):], ":") && (err != nil || got != v2d) {
				t.Errorf("%s resolves to %v, %v; want %s", want, got, err, v2d)
			}
		})
	}
}

// TestTagAndDigestWhenPulling checks that a reference naming both a tag
// and a digest is pulled only when they agree, in a pair and in a bundle,
// and that a bundle's push writes the tag.
func TestTagAndDigestWhenPulling(t *testing.T) {
	t.Parallel()
	src, _, pair := registries(t, nil, nil)
	v1d, v2d := digest(t, pair.V1), digest(t, pair.V2)
	dir := t.TempDir()
	r := imoCmd(t, "", "pull", "--plain-http", "-q", "scratch", src.Ref("app:v2@"+v1d.String()), "-o", filepath.Join(dir, "x.tar"))
	if r.code != exitError || !strings.Contains(r.stderr, "points at "+v2d.String()) {
		t.Errorf("imo pull app:v2@<v1's digest>: want exit 1 saying v2 points elsewhere:\n%s", r)
	}
	from := filepath.Join(dir, "pairs.txt")
	if err := os.WriteFile(from, []byte("scratch "+src.Ref("app:v2@"+v2d.String())+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	bundle := filepath.Join(dir, "bundle.tar")
	if r := imoCmd(t, "", "pull", "--plain-http", "-q", "--from", from, "-o", bundle); r.code != 0 {
		t.Fatal(r)
	}
	site := newSite(t)
	r = imoCmd(t, "", "push", "--plain-http", "-q", bundle, site.Host+"/mirror")
	if want := site.Ref("mirror/app:v2@" + v2d.String()); r.code != 0 || strings.TrimSpace(r.stdout) != want {
		t.Errorf("imo push of a bundle of app:v2@DIGEST: want %s:\n%s", want, r)
	}
	if got, err := headDigest(site.Ref("mirror/app:v2")); err != nil || got != v2d {
		t.Errorf("the bundle's push left mirror/app:v2 at %v, %v; want %s", got, err, v2d)
	}
}

// TestReferenceErrors checks that references that do not parse are usage
// errors that say why, before any request.
func TestReferenceErrors(t *testing.T) {
	t.Parallel()
	src, _, _ := registries(t, nil, nil)
	tests := []struct {
		name, ref, reason string
	}{
		{"upper-case repository", src.Host + "/App:v2", "repository can only contain"},
		{"tag too long", src.Ref("app:" + strings.Repeat("t", 129)), "tag must be between 1 and 128 characters"},
		{"bad digest", src.Ref("app@sha256:abc"), "digest"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			src.ResetCounts()
			for _, args := range [][]string{
				{"pull", "--plain-http", "-q", "scratch", tc.ref, "-o", filepath.Join(t.TempDir(), "a.tar")},
				{"manifest", "--plain-http", tc.ref},
			} {
				r := imoCmd(t, "", args...)
				if r.code != exitUsage || !strings.Contains(r.stderr, tc.reason) {
					t.Errorf("imo %s %s: want exit 2 saying %q:\n%s", args[0], tc.ref, tc.reason, r)
				}
			}
			if n := requests(src); n != 0 {
				t.Errorf("bad references sent %d requests", n)
			}
		})
	}
}

// newSite starts an empty registry, stopped when the test ends.
func newSite(t *testing.T) *sandbox.Registry {
	t.Helper()
	r := sandbox.NewRegistry(nil, nil)
	t.Cleanup(r.Close)
	return r
}

func digest(t *testing.T, a sandbox.Artifact) v1.Hash {
	t.Helper()
	h, err := a.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// TestErrorMessages checks that errors read as one plain line: a
// registry's error detail is not printed as a Go map, and a registry that
// cannot be reached over plain HTTP is not said to have failed over HTTPS.
func TestErrorMessages(t *testing.T) {
	t.Parallel()
	detailed, _, _ := registries(t, func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if strings.HasSuffix(r.URL.Path, "/manifests/nope") {
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(http.StatusNotFound)
				io.WriteString(w, `{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown","detail":{"Tag":"nope"}}]}`)
				return
			}
			h.ServeHTTP(w, r)
		})
	}, nil)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := l.Addr().String()
	l.Close()
	tests := []struct {
		name      string
		args      []string
		want      string
		forbidden string
	}{
		{"not found", []string{"manifest", "--plain-http", detailed.Ref("app:nope")}, "MANIFEST_UNKNOWN: manifest unknown", "map["},
		{"refused over plain HTTP", []string{"manifest", "--plain-http", "--retries", "0", closed + "/app:v1"}, "connecting to registry " + closed + " (plain HTTP): dial tcp", "https://"},
		{"refused over HTTPS", []string{"manifest", "--retries", "0", closed + "/app:v1"}, "connecting to registry " + closed + " (HTTPS): dial tcp", "http://"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := imoCmd(t, "", tc.args...)
			if r.code != exitError || !strings.Contains(r.stderr, tc.want) || strings.Contains(r.stderr, tc.forbidden) {
				t.Errorf("imo %v: want exit 1 saying %q without %q:\n%s", tc.args, tc.want, tc.forbidden, r)
			}
		})
	}
}
