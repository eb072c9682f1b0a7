package archive

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ed25519"
	"errors"
	"io"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/imokit/imo/internal/graph"
)

// signedArchive builds an archive of one image, carrying its config and
// one layer and leaving out another, signed by key.
func signedArchive(t testing.TB, key ed25519.PrivateKey) []byte {
	t.Helper()
	blobs := testBlobs{}
	base := blobs.add(types.OCILayer, []byte("the base layer"))
	carried := blobs.add(types.OCILayer, []byte("the new layer"))
	c := oneImage(t, blobs, []v1.Descriptor{base, carried}, func(d v1.Descriptor) bool { return d.Digest == base.Digest })
	c.Plan.Signer = Fingerprint(key.Public())
	c.Sign = func(b []byte) ([]byte, error) { return Sign(key, b) }
	l, err := Build(c)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := l.WriteTo(context.Background(), &buf, blobs.fetch, nil, 1); err != nil {
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
