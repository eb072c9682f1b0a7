package imo_test

import (
	"bytes"
	"context"
	"net/http"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/imokit/imo"
	"github.com/imokit/imo/internal/sandbox"
)

// signedSource writes app:v1 and app:v2 (two platforms) into the registry
// at src, with a cosign signature and attestation of app:v2 and an OCI
// SBOM referring to its linux/arm64 manifest.
type signedSource struct {
	pair               *sandbox.AppPair
	signer             *sandbox.Signer
	sig, att, sbom     v1.Image
	final, armManifest v1.Hash
}

func newSignedSource(t *testing.T, src string) *signedSource {
	t.Helper()
	s := &signedSource{pair: newAppPair(t, sandbox.OCI, "linux/amd64", "linux/arm64")}
	writeTo(t, src+"/app:v1", s.pair.V1)
	writeTo(t, src+"/app:v2", s.pair.V2)
	s.final = digest(t, s.pair.V2)
	var err error
	if s.signer, err = sandbox.NewSigner(); err != nil {
		t.Fatal(err)
	}
	if s.sig, err = s.signer.Signature(src+"/app", s.final); err != nil {
		t.Fatal(err)
	}
	if s.att, err = s.signer.Attestation(src+"/app", s.final, "https://slsa.dev/provenance/v1", []byte(`{"builder":{"id":"test"}}`)); err != nil {
		t.Fatal(err)
	}
	tag := "sha256-" + s.final.Hex
	writeTo(t, src+"/app:"+tag+".sig", s.sig)
	writeTo(t, src+"/app:"+tag+".att", s.att)

	idx, err := v1.ParseIndexManifest(bytes.NewReader(must(s.pair.V2.RawManifest())))
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range idx.Manifests {
		if d.Platform.Architecture == "arm64" {
			s.armManifest = d.Digest
			if s.sbom, err = sandbox.SBOM(d, []byte(`{"spdxVersion":"SPDX-2.3","name":"app"}`)); err != nil {
				t.Fatal(err)
			}
		}
	}
	writeTo(t, src+"/app@"+digest(t, s.sbom).String(), s.sbom)
	return s
}

func must(b []byte, err error) []byte {
	if err != nil {
		panic(err)
	}
	return b
}

// check verifies that the registry at dst holds app:v2 with its
// signature, attestation and SBOM, byte for byte and verifiable.
func (s *signedSource) check(t *testing.T, dst string) {
	t.Helper()
	repo, err := name.NewRepository(dst + "/app")
	if err != nil {
		t.Fatal(err)
	}
	if got, err := headDigest(dst + "/app:v2"); err != nil || got != s.final {
		t.Fatalf("%s/app:v2 = %v, %v; want %s", dst, got, err, s.final)
	}
	tag := "sha256-" + s.final.Hex
	for _, c := range []struct {
		suffix string
		want   v1.Image
		verify func(v1.Image, v1.Hash) error
	}{{".sig", s.sig, s.signer.VerifySignature}, {".att", s.att, s.signer.VerifyAttestation}} {
		img, err := remote.Image(repo.Tag(tag + c.suffix))
		if err != nil {
			t.Errorf("%s: %v", tag+c.suffix, err)
			continue
		}
		if digest(t, img) != digest(t, c.want) {
			t.Errorf("%s arrived as %s, want %s", tag+c.suffix, digest(t, img), digest(t, c.want))
		}
		if err := c.verify(img, s.final); err != nil {
			t.Errorf("%s does not verify at the destination: %v", tag+c.suffix, err)
		}
	}
	idx, err := remote.Referrers(repo.Digest(s.armManifest.String()))
	if err != nil {
		t.Fatalf("referrers of the arm64 manifest: %v", err)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	if len(im.Manifests) != 1 || im.Manifests[0].Digest != digest(t, s.sbom) {
		t.Errorf("referrers of the arm64 manifest at the destination = %v, want the SBOM %s", im.Manifests, digest(t, s.sbom))
	}
}

// testReferrers pulls app:v1 → app:v2 with its referrers from src and
// pushes it to dst, which holds app:v1.
func testReferrers(t *testing.T, src, dst string) {
	s := newSignedSource(t, src)
	writeTo(t, dst+"/app:v1", s.pair.V1)
	ctx := context.Background()
	inc := imo.New(imo.WithPlainHTTP(), imo.WithReferrers())
	path := filepath.Join(t.TempDir(), "signed.tar")
	plan, err := pullToFile(ctx, inc, src+"/app:v1", src+"/app:v2", path)
	if err != nil {
		t.Fatalf("PullToFile() = %v", err)
	}
	if len(plan.Images) != 4 {
		t.Fatalf("the archive holds %d images, want app:v2, its signature, attestation and SBOM", len(plan.Images))
	}
	for _, img := range plan.Images[1:] {
		if img.Subject == (v1.Hash{}) {
			t.Errorf("%s has no subject", img.Final.Reference)
		}
	}
	results, err := pushArchive(ctx, inc, path, dst+"/app:v2")
	if err != nil {
		t.Fatalf("PushArchive() = %v", err)
	}
	for _, r := range results[1:] {
		if r.Destination.Context().String() != dst+"/app" {
			t.Errorf("artifact %s went to %s, want the image's repository", r.Image, r.Destination)
		}
	}
	s.check(t, dst)

	// Without WithReferrers they stay behind.
	plain, err := planOf(ctx, imo.New(imo.WithPlainHTTP()), src+"/app:v1", src+"/app:v2")
	if err != nil {
		t.Fatal(err)
	}
	if len(plain.Images) != 1 || strings.Contains(plain.Images[0].Final.Reference, "sha256-") {
		t.Errorf("without WithReferrers the plan holds %d images", len(plain.Images))
	}
}

func TestReferrers(t *testing.T) {
	t.Parallel()
	src, dst := newTestRegistry(t, nil), newTestRegistry(t, nil)
	testReferrers(t, src.Host, dst.Host)
}

func TestReferrersAPI(t *testing.T) {
	t.Parallel()
	// Registries that serve the OCI 1.1 referrers API.
	src := sandbox.NewRegistry(nil, nil, registry.WithReferrersSupport(true))
	dst := sandbox.NewRegistry(nil, nil, registry.WithReferrersSupport(true))
	t.Cleanup(src.Close)
	t.Cleanup(dst.Close)
	testReferrers(t, src.Host, dst.Host)
	if n := src.Count(http.MethodGet, "/referrers/"); n == 0 {
		t.Errorf("the pull never asked the referrers API")
	}
}
