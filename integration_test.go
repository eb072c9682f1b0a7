package imo_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
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

// The integration tests run the CNCF distribution registry and skopeo from
// Debian. Without them they skip, saying how to install them; with
// IMO_INTEGRATION set (as CI sets it) a missing binary fails the test.
func requireBinary(t *testing.T, bin string) {
	t.Helper()
	if _, err := exec.LookPath(bin); err != nil {
		if os.Getenv("IMO_INTEGRATION") != "" {
			t.Fatalf("%s is required when IMO_INTEGRATION is set: %v", bin, err)
		}
		t.Skipf("%s not installed: apt-get install docker-registry skopeo (set IMO_INTEGRATION=1 to make this a failure)", bin)
	}
}

// realRegistry starts the distribution registry for the test.
func realRegistry(t *testing.T, o sandbox.DistributionOptions) *sandbox.Distribution {
	t.Helper()
	requireBinary(t, sandbox.DistributionBinary)
	d, err := sandbox.StartDistribution(context.Background(), t.TempDir(), o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(d.Stop)
	return d
}

func writeTo(t *testing.T, ref string, img sandbox.Artifact, opts ...remote.Option) {
	t.Helper()
	r, err := name.ParseReference(ref)
	if err != nil {
		t.Fatal(err)
	}
	switch v := img.(type) {
	case v1.Image:
		err = remote.Write(r, v, opts...)
	case v1.ImageIndex:
		err = remote.WriteIndex(r, v, opts...)
	}
	if err != nil {
		t.Fatalf("writing %s: %v", ref, err)
	}
}

// headDigest returns the digest ref resolves to, or the error.
func headDigest(ref string, opts ...remote.Option) (v1.Hash, error) {
	r, err := name.ParseReference(ref)
	if err != nil {
		return v1.Hash{}, err
	}
	d, err := remote.Head(r, opts...)
	if err != nil {
		return v1.Hash{}, err
	}
	return d.Digest, nil
}

func TestDistributionRoundTrip(t *testing.T) {
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			src := realRegistry(t, sandbox.DistributionOptions{})
			dst := realRegistry(t, sandbox.DistributionOptions{})
			pair := newAppPair(t, tc.format, tc.platforms...)
			writeTo(t, src.Host+"/app:v1", pair.V1)
			writeTo(t, src.Host+"/app:v2", pair.V2)
			writeTo(t, dst.Host+"/app:v1", pair.V1)
			want := digest(t, pair.V2)
			ctx := context.Background()
			inc := imo.New(imo.WithPlainHTTP())

			delta := pullFile(t, inc, src.Host+"/app:v1", src.Host+"/app:v2")
			whole := pullFile(t, inc, imo.Scratch, src.Host+"/app:v2")

			// Blobs are per repository in distribution: another repository lacks them.
			err := inc.PushVet(ctx, delta, dst.Host+"/other:v2")
			var me *imo.MissingBlobsError
			if !errors.As(err, &me) {
				t.Fatalf("PushVet(other repository) = %v, want a *MissingBlobsError", err)
			}
			var missing []v1.Hash
			for _, b := range me.Blobs {
				missing = append(missing, b.Digest)
			}
			slices.SortFunc(missing, compareHash)
			if wantMissing := slices.SortedFunc(slices.Values(pair.Shared), compareHash); !slices.Equal(missing, wantMissing) {
				t.Errorf("PushVet(other repository) missing = %v, want %v", missing, wantMissing)
			}
			if err := inc.Push(ctx, delta, dst.Host+"/other:v2"); !errors.Is(err, imo.ErrMissingBlobs) {
				t.Errorf("Push(other repository) = %v, want ErrMissingBlobs", err)
			}
			if _, err := headDigest(dst.Host + "/other:v2"); err == nil {
				t.Error("a refused push left a tag")
			}

			if err := inc.PushVet(ctx, delta, dst.Host+"/app:v2"); err != nil {
				t.Fatalf("PushVet() = %v", err)
			}
			if err := inc.Push(ctx, delta, dst.Host+"/app:v2"); err != nil {
				t.Fatalf("Push(delta) = %v", err)
			}
			if err := inc.Push(ctx, whole, dst.Host+"/whole:v2"); err != nil {
				t.Fatalf("Push(whole) = %v", err)
			}
			for _, ref := range []string{dst.Host + "/app:v2", dst.Host + "/whole:v2"} {
				if got, err := headDigest(ref); err != nil || got != want {
					t.Errorf("%s = %s (%v), want %s", ref, got, err, want)
				}
			}
			if got, want := manifests(t, dst.Host+"/app:v2"), manifests(t, src.Host+"/app:v2"); !slices.EqualFunc(got, want, bytes.Equal) {
				t.Error("pushed manifests differ from the source's")
			}
		})
	}
}

func TestDistributionMountFrom(t *testing.T) {
	src := realRegistry(t, sandbox.DistributionOptions{})
	dst := realRegistry(t, sandbox.DistributionOptions{})
	pair := newAppPair(t, docker, "linux/amd64", "linux/arm64")
	writeTo(t, src.Host+"/app:v1", pair.V1)
	writeTo(t, src.Host+"/app:v2", pair.V2)
	writeTo(t, dst.Host+"/team/base:v1", pair.V1)
	ctx := context.Background()
	delta := pullFile(t, imo.New(imo.WithPlainHTTP()), src.Host+"/app:v1", src.Host+"/app:v2")

	if err := imo.New(imo.WithPlainHTTP()).PushVet(ctx, delta, dst.Host+"/app:v2"); !errors.Is(err, imo.ErrMissingBlobs) {
		t.Fatalf("PushVet() without mounts = %v, want ErrMissingBlobs", err)
	}
	var mounted atomic.Int32
	inc := imo.New(imo.WithPlainHTTP(), imo.WithMountFrom("team/base"), imo.WithReporter(imo.ReporterFunc(func(e imo.Event) {
		if e.Kind == imo.BlobSkipped && strings.HasPrefix(e.Reason, "mounted from") {
			mounted.Add(1)
		}
	})))
	if err := inc.PushVet(ctx, delta, dst.Host+"/app:v2"); err != nil {
		t.Fatalf("PushVet() with mounts = %v", err)
	}
	if err := inc.Push(ctx, delta, dst.Host+"/app:v2"); err != nil {
		t.Fatalf("Push() with mounts = %v", err)
	}
	if got, want := int(mounted.Load()), len(pair.Shared); got != want {
		t.Errorf("mounted %d blobs, want %d", got, want)
	}
	if got, err := headDigest(dst.Host + "/app:v2"); err != nil || got != digest(t, pair.V2) {
		t.Errorf("app:v2 = %s (%v), want %s", got, err, digest(t, pair.V2))
	}
}

// cancelAfter cancels a context once a request body of an upload has sent
// some bytes, to interrupt a push mid-upload.
type cancelAfter struct {
	next   http.RoundTripper
	cancel context.CancelFunc
}

func (c cancelAfter) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.Body != nil && (r.Method == http.MethodPatch || r.Method == http.MethodPut) && r.ContentLength != 0 {
		r.Body = cancellingBody{r.Body, c.cancel}
	}
	return c.next.RoundTrip(r)
}

type cancellingBody struct {
	io.ReadCloser
	cancel context.CancelFunc
}

func (b cancellingBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p[:min(len(p), 512)])
	b.cancel()
	return n, err
}

func TestDistributionInterruptedPush(t *testing.T) {
	src := realRegistry(t, sandbox.DistributionOptions{})
	dst := realRegistry(t, sandbox.DistributionOptions{})
	pair := newAppPair(t, oci, "linux/amd64", "linux/arm64")
	writeTo(t, src.Host+"/app:v2", pair.V2)
	arc := pullFile(t, imo.New(imo.WithPlainHTTP()), imo.Scratch, src.Host+"/app:v2")

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	interrupted := imo.New(imo.WithPlainHTTP(), imo.WithTransport(cancelAfter{http.DefaultTransport, cancel}))
	if err := interrupted.Push(ctx, arc, dst.Host+"/app:v2"); !errors.Is(err, context.Canceled) {
		t.Fatalf("interrupted Push() = %v, want context.Canceled", err)
	}
	if _, err := headDigest(dst.Host + "/app:v2"); err == nil {
		t.Fatal("an interrupted push left a tag")
	}
	idx, err := pair.V2.(v1.ImageIndex).IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range idx.Manifests {
		if _, err := headDigest(dst.Host + "/app@" + m.Digest.String()); err == nil {
			t.Errorf("an interrupted push left manifest %s", m.Digest)
		}
	}
	if err := imo.New(imo.WithPlainHTTP()).Push(context.Background(), arc, dst.Host+"/app:v2"); err != nil {
		t.Fatalf("Push() after an interrupted one = %v", err)
	}
	if got, err := headDigest(dst.Host + "/app:v2"); err != nil || got != digest(t, pair.V2) {
		t.Errorf("app:v2 = %s (%v), want %s", got, err, digest(t, pair.V2))
	}
}

func TestDistributionTLSAndAuth(t *testing.T) {
	ca := newTestCA(t)
	serverCert := ca.issue(t, x509.ExtKeyUsageServerAuth)
	reg := realRegistry(t, sandbox.DistributionOptions{TLS: &serverCert, User: "alice", Password: "s3cret-pw"})
	trust := remote.WithTransport(&http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.pool()}})
	alice := remote.WithAuth(&authn.Basic{Username: "alice", Password: "s3cret-pw"})
	pair := newAppPair(t, docker, "linux/amd64")
	writeTo(t, reg.Host+"/app:v2", pair.V2, trust, alice)
	otherCA := newTestCA(t)

	tests := []struct {
		name    string
		opts    []imo.Option
		wantErr string
	}{
		{"CA and credentials", []imo.Option{imo.WithCABundle(ca.PEM), imo.WithFinalAuth("alice", "s3cret-pw")}, ""},
		{"insecure", []imo.Option{imo.WithInsecurePull(), imo.WithFinalAuth("alice", "s3cret-pw")}, ""},
		{"no CA", []imo.Option{imo.WithFinalAuth("alice", "s3cret-pw")}, "certificate"},
		{"wrong CA", []imo.Option{imo.WithCABundle(otherCA.PEM), imo.WithFinalAuth("alice", "s3cret-pw")}, "certificate"},
		{"wrong password", []imo.Option{imo.WithCABundle(ca.PEM), imo.WithFinalAuth("alice", "wrong-pw")}, "UNAUTHORIZED"},
		{"no credentials", []imo.Option{imo.WithCABundle(ca.PEM), imo.WithKeychain(authn.NewMultiKeychain())}, "UNAUTHORIZED"},
		{"plain HTTP to a TLS registry", []imo.Option{imo.WithPlainHTTP(), imo.WithFinalAuth("alice", "s3cret-pw")}, "400"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := planOf(context.Background(), imo.New(tc.opts...), imo.Scratch, reg.Host+"/app:v2")
			switch {
			case tc.wantErr == "" && err != nil:
				t.Errorf("Plan() = %v", err)
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Errorf("Plan() = %v, want an error mentioning %q", err, tc.wantErr)
			case err != nil && strings.Contains(err.Error(), "pw"):
				t.Errorf("Plan() = %v: the error shows a password", err)
			}
		})
	}
}

// skopeo runs skopeo with args and returns its standard output.
func skopeo(t *testing.T, args ...string) []byte {
	t.Helper()
	cmd := exec.Command("skopeo", args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("skopeo %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return out
}

func TestSkopeo(t *testing.T) {
	requireBinary(t, "skopeo")
	src := realRegistry(t, sandbox.DistributionOptions{})
	dst := realRegistry(t, sandbox.DistributionOptions{})
	multi := newAppPair(t, oci, "linux/amd64", "linux/arm64")
	single := newAppPair(t, docker, "linux/amd64")
	writeTo(t, src.Host+"/multi:v2", multi.V2)
	writeTo(t, src.Host+"/single:v1", single.V1)
	writeTo(t, src.Host+"/single:v2", single.V2)
	inc := imo.New(imo.WithPlainHTTP())
	ctx := context.Background()

	t.Run("skopeo reads imo's oci-archive", func(t *testing.T) {
		for _, ref := range []string{"multi:v2", "single:v2"} {
			arc := pullFile(t, inc, imo.Scratch, src.Host+"/"+ref)
			want, err := headDigest(src.Host + "/" + ref)
			if err != nil {
				t.Fatal(err)
			}
			raw := skopeo(t, "inspect", "--raw", "oci-archive:"+arc)
			if got := sha256.Sum256(raw); hex.EncodeToString(got[:]) != want.Hex {
				t.Errorf("skopeo inspect --raw oci-archive: digest sha256:%x, want %s", got, want)
			}
			skopeo(t, "copy", "--all", "--preserve-digests", "--dest-tls-verify=false", "oci-archive:"+arc, "docker://"+dst.Host+"/skopeo-"+ref)
			if got, err := headDigest(dst.Host + "/skopeo-" + ref); err != nil || got != want {
				t.Errorf("skopeo copy of %s landed on %s (%v), want %s", ref, got, err, want)
			}
		}
	})

	t.Run("skopeo reads imo's docker-archive", func(t *testing.T) {
		arc := pullFile(t, inc, imo.Scratch, src.Host+"/single:v2")
		var info struct{ Layers []string }
		if err := json.Unmarshal(skopeo(t, "inspect", "docker-archive:"+arc), &info); err != nil {
			t.Fatal(err)
		}
		img := single.V2.(v1.Image)
		layers, err := img.Layers()
		if err != nil {
			t.Fatal(err)
		}
		if len(info.Layers) != len(layers) {
			t.Errorf("skopeo sees %d layers, want %d", len(info.Layers), len(layers))
		}
		config := skopeo(t, "inspect", "--config", "--raw", "docker-archive:"+arc)
		wantConfig, err := img.ConfigName()
		if err != nil {
			t.Fatal(err)
		}
		if got := sha256.Sum256(config); hex.EncodeToString(got[:]) != wantConfig.Hex {
			t.Errorf("skopeo's config through docker-archive: sha256:%x, want %s", got, wantConfig)
		}
	})

	t.Run("imo pushes skopeo's oci-archive", func(t *testing.T) {
		for _, ref := range []string{"multi:v2", "single:v2"} {
			arc := filepath.Join(t.TempDir(), "skopeo.tar")
			skopeo(t, "copy", "--all", "--preserve-digests", "--src-tls-verify=false", "docker://"+src.Host+"/"+ref, "oci-archive:"+arc)
			want, err := headDigest(src.Host + "/" + ref)
			if err != nil {
				t.Fatal(err)
			}
			if err := inc.PushVet(ctx, arc, dst.Host+"/from-skopeo-"+ref); err != nil {
				t.Errorf("PushVet(skopeo's archive of %s) = %v", ref, err)
			}
			pushed, err := pushArchive(ctx, inc, arc, dst.Host+"/from-skopeo-"+ref)
			if err != nil {
				t.Fatalf("PushArchive(skopeo's archive of %s) = %v", ref, err)
			}
			if got := pushed[0].Digest; got != want {
				t.Errorf("imo pushed skopeo's archive of %s at %s, want %s", ref, got, want)
			}
		}
	})
}

// TestDistributionInventory takes inventories of the distribution registry
// through its catalog, with and without basic auth.
func TestDistributionInventory(t *testing.T) {
	for _, tc := range []struct {
		name string
		o    sandbox.DistributionOptions
	}{
		{"anonymous", sandbox.DistributionOptions{}},
		{"basic auth", sandbox.DistributionOptions{User: "alice", Password: "s3cret-pw"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := realRegistry(t, tc.o)
			var opts []remote.Option
			incOpts := []imo.Option{imo.WithPlainHTTP()}
			if tc.o.User != "" {
				opts = append(opts, remote.WithAuth(&authn.Basic{Username: tc.o.User, Password: tc.o.Password}))
				incOpts = append(incOpts, imo.WithPushAuth(tc.o.User, tc.o.Password))
			}
			f := pushInventoryFixture(t, func(repoTag string, art sandbox.Artifact) {
				writeTo(t, d.Host+"/"+repoTag, art, opts...)
			})
			inc := imo.New(incOpts...)
			inv, err := inc.Inventory(context.Background(), d.Host)
			if err != nil {
				t.Fatalf("Inventory(catalog) = %v", err)
			}
			want, _ := f.want(t, "other/base", "team/app", "team/tool")
			want.check(t, inv)
			inv, err = inc.Inventory(context.Background(), d.Host+"/team")
			if err != nil {
				t.Fatalf("Inventory(team) = %v", err)
			}
			want, _ = f.want(t, "team/app", "team/tool")
			want.check(t, inv)
			if _, err := inc.Inventory(context.Background(), d.Host, "team/none"); err == nil || !strings.Contains(err.Error(), "team/none") {
				t.Errorf("Inventory(a missing repository) = %v, want an error naming it", err)
			}
		})
	}
}
