package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/imokit/imo/archive"
	"github.com/imokit/imo/internal/sandbox"
)

// result is what one run of the command printed and returned.
type result struct {
	code           int
	stdout, stderr string
}

// imoCmd runs the real root command with args and stdin.
func imoCmd(t *testing.T, stdin string, args ...string) result {
	t.Helper()
	var out, errOut bytes.Buffer
	code := run(context.Background(), args, strings.NewReader(stdin), &out, &errOut)
	return result{code, out.String(), errOut.String()}
}

func (r result) String() string {
	return "exit " + string(rune('0'+r.code)) + "\nstdout:\n" + r.stdout + "\nstderr:\n" + r.stderr
}

// registries starts a source registry holding app:v1 and app:v2 and a
// site registry holding app:v1, stopped when the test ends.
func registries(t *testing.T, wrap func(http.Handler) http.Handler, cfg *tls.Config, opts ...remote.Option) (src, site *sandbox.Registry, pair *sandbox.AppPair) {
	t.Helper()
	sites, err := sandbox.NewSites(context.Background(), sandbox.SitesOptions{Wrap: wrap, TLS: cfg, Write: opts})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sites.Close)
	return sites.Source, sites.Site, sites.Pair
}

func TestDemo(t *testing.T) {
	if r := imoCmd(t, "", "demo"); r.code != 0 || !strings.Contains(r.stdout, "the site now holds app:v2 at the source digest") {
		t.Errorf("imo demo:\n%s", r)
	}
}

func TestPullVetPush(t *testing.T) {
	src, site, pair := registries(t, nil, nil)
	dir := t.TempDir()
	path := filepath.Join(dir, "difference.tar")

	r := imoCmd(t, "", "pull", "--plain-http", "--progress", "plain", src.Ref("app:v1"), src.Ref("app:v2"), "-o", path)
	if r.code != 0 || r.stdout != path+"\n" {
		t.Fatalf("imo pull: stdout should hold only the path's path:\n%s", r)
	}
	if !strings.Contains(r.stderr, "copied sha256:") {
		t.Errorf("imo pull --progress plain printed no progress on stderr:\n%s", r)
	}

	r = imoCmd(t, "", "vet", "--plain-http", path, site.Ref("empty:v2"))
	if r.code != exitMissing || strings.Count(r.stdout, "missing sha256:") != len(pair.Shared) {
		t.Errorf("imo vet into an empty repository: want exit 3 and %d missing blobs listed:\n%s", len(pair.Shared), r)
	}
	r = imoCmd(t, "", "push", "--plain-http", path, site.Ref("empty:v2"))
	if r.code != exitMissing {
		t.Errorf("imo push into an empty repository: want exit 3:\n%s", r)
	}
	r = imoCmd(t, "", "vet", "--plain-http", path, site.Ref("app:v2"))
	if r.code != 0 {
		t.Errorf("imo vet:\n%s", r)
	}
	want, err := pair.V2.Digest()
	if err != nil {
		t.Fatal(err)
	}
	r = imoCmd(t, "", "push", "--plain-http", "-q", path, site.Ref("app:v2"))
	if r.code != 0 || r.stdout != site.Ref("app:v2@"+want.String())+"\n" || r.stderr != "" {
		t.Errorf("imo push: want only %s on stdout:\n%s", site.Ref("app:v2@"+want.String()), r)
	}

	r = imoCmd(t, "", "inspect", "--json", path)
	var plan archive.Plan
	if err := json.Unmarshal([]byte(r.stdout), &plan); err != nil || plan.Images[0].Final.Digest != want {
		t.Errorf("imo inspect --json: %v\n%s", err, r)
	}
	r = imoCmd(t, "", "inspect", path)
	if r.code != 0 || !strings.Contains(r.stdout, "no: in base") || !strings.Contains(r.stdout, "saves") {
		t.Errorf("imo inspect:\n%s", r)
	}
}

func TestPipe(t *testing.T) {
	t.Parallel()
	src, site, pair := registries(t, nil, nil)
	pulled := imoCmd(t, "", "pull", "--plain-http", "-q", src.Ref("app:v1"), src.Ref("app:v2"), "-o", "-")
	if pulled.code != 0 {
		t.Fatalf("imo pull -o -:\n%s", pulled.stderr)
	}
	if r := imoCmd(t, "not an archive", "push", "--plain-http", "-q", "-", site.Ref("app:v2")); r.code != exitError || strings.Contains(r.stderr, "imo-spool-") || !strings.Contains(r.stderr, "standard input") {
		t.Errorf("imo push - of a bad stream: want an error naming the stream, not the spool file:\n%s", r)
	}
	r := imoCmd(t, pulled.stdout, "push", "--plain-http", "-q", "-", site.Ref("app:v2"))
	want, _ := pair.V2.Digest()
	if r.code != 0 || !strings.HasSuffix(strings.TrimSpace(r.stdout), want.String()) {
		t.Errorf("imo push -:\n%s", r)
	}
}

func TestDryRun(t *testing.T) {
	src, _, _ := registries(t, nil, nil)
	src.ResetCounts()
	r := imoCmd(t, "", "pull", "--plain-http", "--dry-run", src.Ref("app:v1"), src.Ref("app:v2"))
	if r.code != 0 || !strings.Contains(r.stdout, "no: in base") || !strings.Contains(r.stdout, "saves") {
		t.Errorf("imo pull --dry-run:\n%s", r)
	}
	if n := src.Count(http.MethodGet, "/blobs/"); n != 0 {
		t.Errorf("imo pull --dry-run downloaded %d blobs", n)
	}
	if _, err := os.Stat("difference.tar"); err == nil {
		t.Error("imo pull --dry-run wrote difference.tar")
	}
}

// TestFailedPullKeepsArchive checks that a failed pull leaves the archive
// it would replace as it was, with nothing beside it but its partial file.
func TestFailedPullKeepsArchive(t *testing.T) {
	src, _, pair := registries(t, nil, nil)
	src.Corrupt(pair.Changed[0])
	dir := t.TempDir()
	archive := filepath.Join(dir, "difference.tar")
	if err := os.WriteFile(archive, []byte("the previous archive"), 0o644); err != nil {
		t.Fatal(err)
	}
	r := imoCmd(t, "", "pull", "--plain-http", "-q", src.Ref("app:v1"), src.Ref("app:v2"), "-o", archive)
	if r.code != exitError || !strings.Contains(r.stderr, pair.Changed[0].String()) {
		t.Errorf("imo pull of a corrupt blob: want exit 1 naming the blob:\n%s", r)
	}
	// The partial file stays only if another blob wrote a byte before the
	// corrupt one failed.
	entries, _ := os.ReadDir(dir)
	partial := len(entries) == 2 && entries[1].Name() == "difference.tar.partial"
	if b, _ := os.ReadFile(archive); len(entries) != 1 && !partial || string(b) != "the previous archive" {
		t.Errorf("a failed pull left %v and changed the existing archive to %q", entries, b)
	}
}

func TestExitCodes(t *testing.T) {
	t.Parallel()
	src, _, _ := registries(t, nil, nil)
	tests := []struct {
		name string
		args []string
		want int
	}{
		{"no command", []string{}, 0},
		{"version", []string{"version"}, 0},
		{"--version", []string{"--version"}, 0},
		{"unknown flag", []string{"pull", "--bogus", "a", "b"}, exitUsage},
		{"missing argument", []string{"pull", "a"}, exitUsage},
		{"bad --sublayer", []string{"pull", "--sublayer", "maybe", "a:1", "b:1"}, exitUsage},
		{"--from with references", []string{"pull", "--from", "x.txt", "a:1", "b:1"}, exitUsage},
		{"bad progress", []string{"pull", "--progress", "loud", "a", "b"}, exitUsage},
		{"bad scheme", []string{"pull", "--scheme", "ftp", "a", "b"}, exitUsage},
		{"bad platform", []string{"pull", "--platform", "linux", "a", "b"}, exitUsage},
		{"cert without key", []string{"pull", "--cert", "c.pem", "a", "b"}, exitUsage},
		{"bad creds", []string{"pull", "--creds", "nocolon", "a", "b"}, exitUsage},
		{"list and image", []string{"manifest", "--list", "--image", "a"}, exitUsage},
		{"missing image", []string{"pull", "--plain-http", "-q", "scratch", src.Ref("app:v9")}, exitError},
		{"missing archive", []string{"push", "-q", "nope.tar", src.Ref("app:v2")}, exitError},
		{"unknown command", []string{"frobnicate"}, exitUsage},
		{"inspect takes no credentials", []string{"inspect", "--creds", "u:p", "x.tar"}, exitUsage},
		{"inventory mounts nothing", []string{"inventory", "--mount-from", "x", "reg.example"}, exitUsage},
		{"vet selects no platform", []string{"vet", "--platform", "linux/amd64", "x.tar", "reg.example/a:1"}, exitUsage},
		{"push uses no mirror", []string{"push", "--ns", "docker.io", "x.tar", "reg.example/a:1"}, exitUsage},
		{"push has no base", []string{"push", "--base-creds", "u:p", "x.tar", "reg.example/a:1"}, exitUsage},
		{"manifest reports no progress", []string{"manifest", "-q", "reg.example/a:1"}, exitUsage},
		{"pull has no destination", []string{"pull", "--dest-creds", "u:p", "a", "b"}, exitUsage},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if r := imoCmd(t, "", tc.args...); r.code != tc.want {
				t.Errorf("imo %v: want exit %d:\n%s", tc.args, tc.want, r)
			}
		})
	}
}

func TestManifest(t *testing.T) {
	t.Parallel()
	src, _, pair := registries(t, nil, nil)
	raw, err := pair.V2.RawManifest()
	if err != nil {
		t.Fatal(err)
	}
	if r := imoCmd(t, "", "manifest", "--plain-http", "--list", src.Ref("app:v2")); r.code != 0 || r.stdout != string(raw) {
		t.Errorf("imo manifest --list: want the index's exact bytes:\n%s", r)
	}
	r := imoCmd(t, "", "manifest", "--plain-http", "--image", "--platform", "linux/arm64", src.Ref("app:v2"))
	if r.code != 0 || !strings.Contains(r.stdout, `"layers"`) {
		t.Errorf("imo manifest --image:\n%s", r)
	}
	want, _ := pair.V2.Digest()
	if r := imoCmd(t, "", "manifest", "--plain-http", "--head", src.Ref("app:v2")); r.code != 0 || !strings.HasPrefix(r.stdout, want.String()+"\t") {
		t.Errorf("imo manifest --head:\n%s", r)
	}
	single, _, _ := registries(t, nil, nil)
	if err := single.Write(context.Background(), single.Ref("one:v1"), mustImage(t)); err != nil {
		t.Fatal(err)
	}
	if r := imoCmd(t, "", "manifest", "--plain-http", "--list", single.Ref("one:v1")); r.code != exitError || !strings.Contains(r.stderr, "no image list") {
		t.Errorf("imo manifest --list of a single image:\n%s", r)
	}
}

// TestManifestNoSingleAnswer checks that manifest prints only what the
// registry serves: with an index whose platform matches several manifests
// (buildx's attestations are all unknown/unknown), or with two platforms,
// --image is an error rather than an index the registry never served.
func TestManifestNoSingleAnswer(t *testing.T) {
	t.Parallel()
	src, _, pair := registries(t, nil, nil)
	a, b := pair.V1.(v1.ImageIndex), pair.V2.(v1.ImageIndex)
	child := func(idx v1.ImageIndex) v1.Image {
		m, err := idx.IndexManifest()
		if err != nil {
			t.Fatal(err)
		}
		img, err := idx.Image(m.Manifests[0].Digest)
		if err != nil {
			t.Fatal(err)
		}
		return img
	}
	unknown := &v1.Platform{OS: "unknown", Architecture: "unknown"}
	idx := mutate.AppendManifests(mutate.IndexMediaType(empty.Index, types.OCIImageIndex),
		mutate.IndexAddendum{Add: child(b), Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "amd64"}}},
		mutate.IndexAddendum{Add: child(a), Descriptor: v1.Descriptor{Platform: unknown}},
		mutate.IndexAddendum{Add: child(b), Descriptor: v1.Descriptor{Platform: unknown}},
	)
	if err := src.Write(context.Background(), src.Ref("att:v1"), idx); err != nil {
		t.Fatal(err)
	}
	r := imoCmd(t, "", "manifest", "--plain-http", "--image", "--platform", "unknown/unknown", "--head", src.Ref("att:v1"))
	if r.code != exitError || !strings.Contains(r.stderr, "no single one") || r.stdout != "" {
		t.Errorf("imo manifest --image for a platform two manifests have: want exit 1 and nothing printed:\n%s", r)
	}
	r = imoCmd(t, "", "manifest", "--plain-http", "--image", "--platform", "linux/amd64", "--platform", "linux/arm64", src.Ref("app:v2"))
	if r.code != exitUsage {
		t.Errorf("imo manifest --image with two platforms: want exit 2:\n%s", r)
	}
	r = imoCmd(t, "", "manifest", "--plain-http", "--image", "--platform", "windows/amd64", src.Ref("att:v1"))
	if r.code != exitError || strings.Count(r.stderr, "unknown/unknown") != 1 {
		t.Errorf("imo manifest --image for a missing platform: want exit 1 listing each platform once:\n%s", r)
	}
}

func mustImage(t *testing.T) sandbox.Artifact {
	pair, err := sandbox.NewAppPair(sandbox.OCI, "linux/amd64")
	if err != nil {
		t.Fatal(err)
	}
	return pair.V1
}

// TestTransportFlags runs pull and push through TLS with a CA made in the
// test, mutual TLS, basic and token auth, and a mirror.
func TestTransportFlags(t *testing.T) {
	t.Parallel()
	ca, err := sandbox.NewCA()
	if err != nil {
		t.Fatal(err)
	}
	serverCert, err := ca.Issue(x509.ExtKeyUsageServerAuth)
	if err != nil {
		t.Fatal(err)
	}
	clientCert, err := ca.Issue(x509.ExtKeyUsageClientAuth)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	caFile, certFile, keyFile := filepath.Join(dir, "ca.pem"), filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	certPEM, keyPEM, err := sandbox.CertPEM(clientCert)
	if err != nil {
		t.Fatal(err)
	}
	for f, b := range map[string][]byte{caFile: ca.PEM, certFile: certPEM, keyFile: keyPEM} {
		if err := os.WriteFile(f, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	trust := remote.WithTransport(&http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.Pool(), Certificates: []tls.Certificate{clientCert}}})
	tlsSrc, _, _ := registries(t, nil, &tls.Config{Certificates: []tls.Certificate{serverCert}}, trust)
	mtlsSrc, _, _ := registries(t, nil, &tls.Config{Certificates: []tls.Certificate{serverCert}, ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: ca.Pool()}, trust)
	basicSrc, _, _ := registries(t, sandbox.BasicAuth("alice", "s3cret-pw"), nil, remote.WithAuth(&authn.Basic{Username: "alice", Password: "s3cret-pw"}))
	tokenSrc, _, _ := registries(t, sandbox.TokenAuth("alice", "s3cret-pw"), nil, remote.WithAuth(&authn.Basic{Username: "alice", Password: "s3cret-pw"}))
	plainSrc, _, _ := registries(t, nil, nil)
	mirror, _, _ := registries(t, func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			// Writing the fixture needs the ping; imo's pull sends ns on every request.
			if r.Method == http.MethodGet && r.URL.Path != "/v2/" && r.URL.Query().Get("ns") != "quay.io" {
				http.Error(w, "this mirror needs ns", http.StatusBadRequest)
				return
			}
			h.ServeHTTP(w, r)
		})
	}, nil)

	tests := []struct {
		name     string
		args     []string
		want     int
		wantHint string
	}{
		{"cacert", []string{"--cacert", caFile, tlsSrc.Ref("app:v2")}, 0, ""},
		{"unknown CA", []string{tlsSrc.Ref("app:v2")}, exitError, "--cacert"},
		{"insecure", []string{"--insecure", tlsSrc.Ref("app:v2")}, 0, "not verified"},
		{"mTLS", []string{"--cacert", caFile, "--cert", certFile, "--key", keyFile, mtlsSrc.Ref("app:v2")}, 0, ""},
		{"basic auth", []string{"--plain-http", "--creds", "alice:s3cret-pw", basicSrc.Ref("app:v2")}, 0, ""},
		{"basic auth, final side", []string{"--plain-http", "--final-creds", "alice:s3cret-pw", basicSrc.Ref("app:v2")}, 0, ""},
		{"user and password-stdin", []string{"--plain-http", "--user", "alice", "--password-stdin", tokenSrc.Ref("app:v2")}, 0, ""},
		{"token auth, wrong password", []string{"--plain-http", "--creds", "alice:wrong-pw", tokenSrc.Ref("app:v2")}, exitError, "credentials"},
		{"no credentials", []string{"--plain-http", basicSrc.Ref("app:v2")}, exitError, "credentials"},
		{"plain HTTP needs the flag", []string{plainSrc.Ref("app:v2")}, exitError, "--plain-http"},
		{"scheme http", []string{"--scheme", "http", plainSrc.Ref("app:v2")}, 0, ""},
		{"mirror namespace", []string{"--plain-http", "--ns", "quay.io", mirror.Ref("app:v2")}, 0, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			args := append([]string{"pull", "--progress", "json", "-o", filepath.Join(t.TempDir(), "a.tar"), "scratch"}, tc.args...)
			// Flags go before the positional arguments either way.
			args = append(args[:len(args)-len(tc.args)], tc.args...)
			r := imoCmd(t, "s3cret-pw\n", args...)
			if r.code != tc.want || !strings.Contains(r.stderr, tc.wantHint) {
				t.Errorf("imo %v: want exit %d and %q on stderr:\n%s", args, tc.want, tc.wantHint, r)
			}
			for _, secret := range []string{"s3cret-pw", "wrong-pw"} {
				if strings.Contains(r.stdout+r.stderr, secret) {
					t.Errorf("imo %v printed a password:\n%s", args, r)
				}
			}
		})
	}
}

// TestFaultsThatNeverClear checks that a registry failing every request
// makes pull fail within its retry budget, leaving no output file, and push
// fail leaving no tag.
func TestFaultsThatNeverClear(t *testing.T) {
	src, _, _ := registries(t, nil, nil)
	faults := sandbox.NewFaultInjector(7, 0, 0)
	broken, _, _ := registries(t, faults.Wrap, nil)
	broken.ResetCounts()
	faults.SetRate(1)
	dir := t.TempDir()
	out := filepath.Join(dir, "difference.tar")
	r := imoCmd(t, "", "pull", "--plain-http", "-q", "--retries", "2", "--retry-wait", "1ms", "scratch", broken.Ref("app:v2"), "-o", out)
	if r.code != exitError || !strings.Contains(r.stderr, broken.Host) {
		t.Errorf("imo pull from a broken registry: want exit 1 naming %s:\n%s", broken.Host, r)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Errorf("a failed pull left %d files", len(entries))
	}
	archive := filepath.Join(dir, "good.tar")
	if r := imoCmd(t, "", "pull", "--plain-http", "-q", "scratch", src.Ref("app:v2"), "-o", archive); r.code != 0 {
		t.Fatal(r)
	}
	r = imoCmd(t, "", "push", "--plain-http", "-q", "--retries", "2", "--retry-wait", "1ms", archive, broken.Ref("new:v2"))
	if r.code != exitError {
		t.Errorf("imo push into a broken registry: want exit 1:\n%s", r)
	}
	faults.SetRate(0)
	if _, err := headDigest(broken.Ref("new:v2")); err == nil {
		t.Error("a failed push left a tag")
	}
}

func headDigest(ref string) (v1.Hash, error) {
	r, err := name.ParseReference(ref)
	if err != nil {
		return v1.Hash{}, err
	}
	d, err := remote.Head(r)
	if err != nil {
		return v1.Hash{}, err
	}
	return d.Digest, nil
}

// requests counts every request reg served since its counts were reset.
func requests(reg *sandbox.Registry) int {
	n := 0
	for _, method := range []string{"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"} {
		n += reg.Count(method, "/")
	}
	return n
}
