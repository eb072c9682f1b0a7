package archive

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"io"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/imokit/imo/internal/graph"
	"github.com/imokit/imo/internal/verify"
)

// signedArchive builds an archive of one image, carrying its config and
// one layer and leaving out another, signed by key.
func signedArchive(t testing.TB, key ed25519.PrivateKey) []byte {
	t.Helper()
	blobs := map[v1.Hash][]byte{}
	desc := func(mt types.MediaType, b []byte) v1.Descriptor {
		h, n, _ := v1.SHA256(bytes.NewReader(b))
		blobs[h] = b
		return v1.Descriptor{MediaType: mt, Digest: h, Size: n}
	}
	config := desc(types.OCIConfigJSON, []byte(`{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}`))
	base := desc(types.OCILayer, []byte("the base layer"))
	carried := desc(types.OCILayer, []byte("the new layer"))
	manifest, err := json.Marshal(v1.Manifest{SchemaVersion: 2, MediaType: types.OCIManifestSchema1, Config: config, Layers: []v1.Descriptor{base, carried}})
	if err != nil {
		t.Fatal(err)
	}
	md := desc(types.OCIManifestSchema1, manifest)
	plan := &Plan{Version: PlanVersion, Signer: Fingerprint(key.Public()),
		Images: []PlanImage{NewPlanImage(ImageRef{Reference: "reg.example/app:v2", Digest: md.Digest}, ImageRef{Reference: "reg.example/app:v1"}, []v1.Descriptor{md})},
		Blobs: []PlanBlob{
			{MediaType: config.MediaType, Digest: config.Digest, Size: config.Size, Config: true, Included: true},
			{MediaType: base.MediaType, Digest: base.Digest, Size: base.Size, Reason: ReasonInBase},
			{MediaType: carried.MediaType, Digest: carried.Digest, Size: carried.Size, Included: true},
		}}
	md.Annotations = map[string]string{RefNameAnnotation: "reg.example/app:v2"}
	l, err := Build(Contents{Plan: plan, Index: &v1.IndexManifest{SchemaVersion: 2, Manifests: []v1.Descriptor{md}},
		Manifests: []Manifest{{Digest: md.Digest, Raw: manifest}},
		Sign:      func(b []byte) ([]byte, error) { return Sign(key, b) }})
	if err != nil {
		t.Fatal(err)
	}
	fetch := func(_ context.Context, d v1.Descriptor) (io.ReadCloser, error) {
		r, err := verify.NewReader(bytes.NewReader(blobs[d.Digest]), d, "memory", nil)
		return io.NopCloser(r), err
	}
	var buf bytes.Buffer
	if err := l.WriteTo(context.Background(), &buf, fetch, 1); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// FuzzVerify mutates a signed archive: Verify must refuse every change to
// what imo reads with an error of a documented kind, and never panic.
// What it accepts has the signed plan and carries the signed bytes.
func FuzzVerify(f *testing.F) {
	key := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{7}, ed25519.SeedSize))
	signed := signedArchive(f, key)
	good, err := read("signed.tar", bytes.NewReader(signed))
	if err != nil {
		f.Fatal(err)
	}
	if _, err := good.Verify(context.Background(), []crypto.PublicKey{key.Public()}); err != nil {
		f.Fatalf("Verify of the signed archive: %v", err)
	}
	f.Add(signed)
	f.Fuzz(func(t *testing.T, b []byte) {
		a, err := read("fuzzed.tar", bytes.NewReader(b))
		if err != nil {
			return
		}
		_, err = a.Verify(context.Background(), []crypto.PublicKey{key.Public()})
		if err != nil {
			if !errors.Is(err, ErrUntrusted) && !errors.Is(err, ErrInvalid) {
				t.Errorf("Verify returned an error of no documented kind: %v", err)
			}
			return
		}
		if !bytes.Equal(a.planRaw, good.planRaw) {
			t.Errorf("Verify accepted a plan that was not signed:\n%s", a.planRaw)
		}
		gs, err := a.graphs(context.Background())
		if err != nil {
			t.Fatalf("Verify accepted an archive whose images do not walk: %v", err)
		}
		for _, b := range graph.Merge(gs).Blobs {
			if a.Has(b.Desc.Digest) {
				rc, err := a.Blob(context.Background(), b.Desc, nil)
				if err == nil {
					_, err = io.Copy(io.Discard, rc)
				}
				if err != nil {
					t.Errorf("Verify accepted an archive whose blob %s does not read: %v", b.Desc.Digest, err)
				}
			}
		}
	})
}
