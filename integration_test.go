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
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
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
	t.Parallel()
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
	t.Parallel()
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
		if e.Kind == imo.BlobMounted {
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
	t.Parallel()
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
	t.Parallel()
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
	t.Parallel()
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
	t.Parallel()
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

func TestDistributionSublayer(t *testing.T) {
	t.Parallel()
	src := realRegistry(t, sandbox.DistributionOptions{})
	dst := realRegistry(t, sandbox.DistributionOptions{})
	for _, e := range []encoder{encoders[0], encoders[4], encoders[5]} {
		t.Run(e.name, func(t *testing.T) {
			repo := "/" + strings.Fields(e.name)[0]
			f := sandbox.Docker
			if e.mt != types.DockerLayer {
				f = sandbox.OCI
			}
			v1s, v2s, _ := rebuildPair(t, f, src.Host+repo, func(b []byte) v1.Layer { return compressed(t, e, b) })
			writeTo(t, dst.Host+repo+"/app:v1", v1s)
			ctx := context.Background()
			inc := imo.New(imo.WithPlainHTTP(), imo.WithSublayerDeltas(), imo.WithTempDir(t.TempDir()))
			path := filepath.Join(t.TempDir(), "delta.tar")
			plan, err := pullToFile(ctx, inc, src.Host+repo+"/app:v1", src.Host+repo+"/app:v2", path)
			if err != nil {
				t.Fatalf("PullToFile() = %v", err)
			}
			deltas := 0
			for _, b := range plan.Blobs {
				if b.Delta != nil {
					deltas++
				}
			}
			if deltas != 1 {
				t.Errorf("the archive carries %d deltas, want 1", deltas)
			}
			if err := inc.PushVet(ctx, path, dst.Host+repo+"/app:v2"); err != nil {
				t.Fatalf("PushVet() = %v", err)
			}
			if err := inc.Push(ctx, path, dst.Host+repo+"/app:v2"); err != nil {
				t.Fatalf("Push() = %v", err)
			}
			if got, err := headDigest(dst.Host + repo + "/app:v2"); err != nil || got != digest(t, v2s) {
				t.Errorf("the destination holds %v, %v; want %s", got, err, digest(t, v2s))
			}
		})
	}
}

func TestDistributionReferrers(t *testing.T) {
	t.Parallel()
	src := realRegistry(t, sandbox.DistributionOptions{})
	dst := realRegistry(t, sandbox.DistributionOptions{})
	testReferrers(t, src.Host, dst.Host)
}

func TestDistributionInventoryTaglessRepository(t *testing.T) {
	t.Parallel()
	// An interrupted push leaves a repository with blobs and no tag, which
	// the catalog lists: it is inventoried empty.
	d := realRegistry(t, sandbox.DistributionOptions{})
	pair := newAppPair(t, sandbox.OCI, "linux/amd64")
	writeTo(t, d.Host+"/mirror/app:v1", pair.V1)
	l, err := random.Layer(1024, types.OCILayer)
	if err != nil {
		t.Fatal(err)
	}
	repo, err := name.NewRepository(d.Host + "/mirror/new")
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.WriteLayer(repo, l); err != nil {
		t.Fatal(err)
	}
	inv, err := imo.New(imo.WithPlainHTTP()).Inventory(context.Background(), d.Host+"/mirror")
	if err != nil {
		t.Fatalf("Inventory(catalog) = %v", err)
	}
	if len(inv.Repositories) != 2 || inv.Repositories[1].Name != "mirror/new" || len(inv.Repositories[1].Tags) != 0 {
		t.Errorf("Inventory().Repositories = %+v, want mirror/app and mirror/new without tags", inv.Repositories)
	}
}

// TestDistributionBundle pushes a bundle of six images over three
// repositories, two platforms each, sharing base layers, into a prefix of
// the real registry, counting what reaches it.
func TestDistributionBundle(t *testing.T) {
	t.Parallel()
	src := realRegistry(t, sandbox.DistributionOptions{})
	dst := realRegistry(t, sandbox.DistributionOptions{})
	p, err := sandbox.NewProduct(sandbox.OCI, append(bundleApps, "cron"), "linux/amd64", "linux/arm64")
	if err != nil {
		t.Fatal(err)
	}
	var pairs []imo.Pair
	for _, app := range bundleApps {
		for _, tag := range []string{"v1", "v2", "v3"} {
			writeTo(t, src.Host+"/team/"+app+":"+tag, p.Images[app+":"+tag])
		}
		writeTo(t, dst.Host+"/site/team/"+app+":v1", p.Images[app+":v1"])
		for _, tag := range []string{"v2", "v3"} {
			pairs = append(pairs, imo.Pair{Base: src.Host + "/team/" + app + ":v1", Final: src.Host + "/team/" + app + ":" + tag})
		}
	}
	ctx := context.Background()
	inc := imo.New(imo.WithPlainHTTP())
	path := filepath.Join(t.TempDir(), "bundle.tar")
	if _, err := pullBundleToFile(ctx, inc, pairs, path); err != nil {
		t.Fatalf("PullBundleToFile() = %v", err)
	}

	proxy := sandbox.NewProxy(dst.Host)
	defer proxy.Close()
	target := proxy.Host + "/site"
	if _, err := vetArchive(ctx, inc, path, target); err != nil {
		t.Fatalf("VetArchive() = %v", err)
	}
	results, err := pushArchive(ctx, inc, path, target)
	if err != nil {
		t.Fatalf("PushArchive() = %v", err)
	}
	for n, r := range results {
		want, err := headDigest(pairs[n].Final)
		if err != nil {
			t.Fatal(err)
		}
		app, tag, _ := strings.Cut(strings.TrimPrefix(pairs[n].Final, src.Host+"/team/"), ":")
		at := dst.Host + "/site/team/" + app + ":" + tag
		if r.Destination.String() != proxy.Host+"/site/team/"+app+":"+tag {
			t.Errorf("image %d went to %s", n, r.Destination)
		}
		if got, err := headDigest(at); err != nil || got != want {
			t.Errorf("%s = %v, %v; want the source's %s", at, got, err, want)
		}
	}
	if n := proxy.Count(http.MethodPut, "digest="+p.Patch.String()); n != 1 {
		t.Errorf("the patch layer all six images share was uploaded %d times, want 1", n)
	}
	if n := proxy.Count(http.MethodPost, "mount="+p.Patch.String()); n != len(bundleApps)-1 {
		t.Errorf("the patch layer was mounted %d times, want %d", n, len(bundleApps)-1)
	}
	for _, h := range p.Base {
		if n := proxy.Count(http.MethodPut, h.String()) + proxy.Count(http.MethodPost, "mount="+h.String()); n != 0 {
			t.Errorf("base layer %s was sent %d times", h, n)
		}
	}

	// The far side's inventory, and a second bundle built against it:
	// a new app, whole, and a rebuild of web, carry no blob the far side
	// holds, and push mounts what they share from where it is.
	for _, tag := range []string{"v2", "v3"} {
		writeTo(t, src.Host+"/team/cron:"+tag, p.Images["cron:"+tag])
	}
	inv, err := inc.Inventory(ctx, dst.Host+"/site")
	if err != nil {
		t.Fatalf("Inventory() = %v", err)
	}
	if len(inv.Repositories) != len(bundleApps) {
		t.Errorf("the inventory lists %d repositories, want %d", len(inv.Repositories), len(bundleApps))
	}
	second := []imo.Pair{
		{Base: imo.Scratch, Final: src.Host + "/team/cron:v2"},
		{Base: imo.Scratch, Final: src.Host + "/team/cron:v3"},
		{Base: imo.Scratch, Final: src.Host + "/team/web:v3"},
	}
	path2 := filepath.Join(t.TempDir(), "second.tar")
	plan, err := pullBundleToFile(ctx, imo.New(imo.WithPlainHTTP(), imo.WithHave(inv)), second, path2)
	if err != nil {
		t.Fatalf("PullBundleToFile(--have) = %v", err)
	}
	for _, b := range plan.Blobs {
		if _, held := inv.Blob(b.Digest); held && b.Included {
			t.Errorf("the second bundle carries %s, which the far side holds", b.Digest)
		}
	}
	carried, whole := plan.Bytes()
	t.Logf("second bundle: %d of %d bytes carried", carried, whole)
	results, err = pushArchive(ctx, inc, path2, proxy.Host+"/site")
	if err != nil {
		t.Fatalf("PushArchive(second) = %v", err)
	}
	for n, r := range results {
		want, err := headDigest(second[n].Final)
		if err != nil {
			t.Fatal(err)
		}
		if got, err := headDigest(strings.Replace(r.Destination.String(), proxy.Host, dst.Host, 1)); err != nil || got != want {
			t.Errorf("%s = %v, %v; want %s", r.Destination, got, err, want)
		}
	}
	if n := proxy.Count(http.MethodPut, "digest="+p.Patch.String()); n != 1 {
		t.Errorf("after the second push the patch layer has been uploaded %d times, want once in all", n)
	}
}

// TestDistributionVolumes pulls from the real registry into volumes with
// parity 2, loses one volume and damages another, and pushes what is left
// to the real registry: the image lands digest for digest. One more lost,
// and nothing is pushed.
func TestDistributionVolumes(t *testing.T) {
	t.Parallel()
	src := realRegistry(t, sandbox.DistributionOptions{})
	dst := realRegistry(t, sandbox.DistributionOptions{})
	pair := newAppPair(t, docker, "linux/amd64", "linux/arm64")
	writeTo(t, src.Host+"/app:v2", pair.V2)
	ctx := context.Background()
	inc := imo.New(imo.WithPlainHTTP())
	diff, err := inc.Resolve(ctx, imo.Pair{Base: imo.Scratch, Final: src.Host + "/app:v2"})
	if err != nil {
		t.Fatal(err)
	}
	defer diff.Close()
	dir := t.TempDir()
	vols, err := diff.WriteVolumes(ctx, filepath.Join(dir, "app.tar"), 64<<10, 2)
	if err != nil {
		t.Fatal(err)
	}
	if len(vols) < 4 {
		t.Fatalf("WriteVolumes wrote %d volumes, want at least 2 data and 2 parity", len(vols))
	}
	os.Remove(vols[0])
	b, err := os.ReadFile(vols[1])
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)/2] ^= 1
	os.WriteFile(vols[1], b, 0o644)
	if err := inc.Push(ctx, dir, dst.Host+"/app:v2"); err != nil {
		t.Fatalf("Push(a set missing a volume and with one damaged, parity 2) = %v", err)
	}
	if got, err := headDigest(dst.Host + "/app:v2"); err != nil || got != digest(t, pair.V2) {
		t.Errorf("the pushed image is %s (%v), want %s", got, err, digest(t, pair.V2))
	}
	os.Remove(vols[len(vols)-1])
	if err := inc.Push(ctx, dir, dst.Host+"/again:v2"); !errors.Is(err, imo.ErrIncompleteVolumes) {
		t.Errorf("Push(a set missing two volumes and with one damaged, parity 2) = %v, want ErrIncompleteVolumes", err)
	}
	if _, err := headDigest(dst.Host + "/again:v2"); err == nil {
		t.Error("a refused push of volumes left a tag")
	}
}
