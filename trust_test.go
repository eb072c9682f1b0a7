package imo_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/imokit/imo"
	"github.com/imokit/imo/archive"
)

// requestsTo counts every request reg served since its counts were reset.
func requestsTo(reg *testRegistry) int {
	n := 0
	for _, m := range []string{http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete} {
		n += reg.count(m, "/")
	}
	return n
}

// TestSignedArchives signs archives with ECDSA P-256 and Ed25519 keys and
// checks that push accepts them with any of the keys that may have signed,
// and refuses every archive the keys do not vouch for before it sends a
// single request to the destination.
func TestSignedArchives(t *testing.T) {
	t.Parallel()
	src, pair := setup(t, docker, "linux/amd64", "linux/arm64")
	ecKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	edPub, edKey, _ := ed25519.GenerateKey(rand.Reader)
	otherKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ctx := context.Background()
	signed := func(t *testing.T, signer crypto.Signer) string {
		t.Helper()
		path := filepath.Join(t.TempDir(), "signed.tar")
		if _, err := pullToFile(ctx, imo.New(imo.WithPlainHTTP(), imo.WithSigner(signer)), src.ref("app:v1"), src.ref("app:v2"), path); err != nil {
			t.Fatal(err)
		}
		return path
	}
	ecArchive, edArchive := signed(t, ecKey), signed(t, edKey)
	// A signer that is not a key in memory, as a hardware module's is.
	opaque := signed(t, opaqueSigner{ecKey})
	unsigned := pullFile(t, imo.New(imo.WithPlainHTTP()), src.ref("app:v1"), src.ref("app:v2"))

	// Edits of a signed archive, each keeping it a readable archive.
	edit := func(t *testing.T, f func(name string, b []byte) (string, []byte)) string {
		t.Helper()
		path := filepath.Join(t.TempDir(), "edited.tar")
		b, err := os.ReadFile(ecArchive)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, b, 0o644); err != nil {
			t.Fatal(err)
		}
		rewriteArchive(t, path, f)
		return path
	}
	firstChild := mustPlan(t, ecArchive).Images[0].Manifests[1] // replaces the index below
	tests := []struct {
		name    string
		archive string
		keys    []crypto.PublicKey
		reason  string // "" when it must be accepted
	}{
		{"ECDSA, its key", ecArchive, []crypto.PublicKey{&ecKey.PublicKey}, ""},
		{"Ed25519, its key", edArchive, []crypto.PublicKey{edPub}, ""},
		{"ECDSA, signed by an opaque signer", opaque, []crypto.PublicKey{&ecKey.PublicKey}, ""},
		{"the second of two keys", ecArchive, []crypto.PublicKey{&otherKey.PublicKey, &ecKey.PublicKey}, ""},
		{"unsigned", unsigned, []crypto.PublicKey{&ecKey.PublicKey}, "not signed"},
		{"another key", ecArchive, []crypto.PublicKey{&otherKey.PublicKey}, "no key given verifies"},
		{"imo.json tampered, the old signature", edit(t, func(name string, b []byte) (string, []byte) {
			if name == archive.PlanFile {
				b = bytes.Replace(b, []byte(`"included": true`), []byte(`"included": false`), 1)
			}
			return name, b
		}), []crypto.PublicKey{&ecKey.PublicKey}, "no key given verifies"},
		{"a carried blob swapped", edit(t, func(name string, b []byte) (string, []byte) {
			if name == "blobs/sha256/"+pair.Changed[0].Hex {
				b = bytes.Repeat([]byte{'x'}, len(b))
			}
			return name, b
		}), []crypto.PublicKey{&ecKey.PublicKey}, pair.Changed[0].String()},
		{"index.json pointing at another image", edit(t, func(name string, b []byte) (string, []byte) {
			if name == archive.IndexFile {
				var idx v1.IndexManifest
				if err := json.Unmarshal(b, &idx); err != nil {
					t.Fatal(err)
				}
				idx.Manifests[0].Digest, idx.Manifests[0].Size, idx.Manifests[0].MediaType = firstChild.Digest, firstChild.Size, firstChild.MediaType
				b, _ = json.Marshal(idx)
			}
			return name, b
		}), []crypto.PublicKey{&ecKey.PublicKey}, archive.IndexFile},
		{"index.json naming the image with another media type", edit(t, func(name string, b []byte) (string, []byte) {
			if name == archive.IndexFile {
				b = bytes.Replace(b, []byte(types.DockerManifestList), []byte(types.OCIImageIndex), 1)
			}
			return name, b
		}), []crypto.PublicKey{&ecKey.PublicKey}, "manifests of"},
		{"index.json giving the image a platform", edit(t, func(name string, b []byte) (string, []byte) {
			if name == archive.IndexFile {
				var idx v1.IndexManifest
				if err := json.Unmarshal(b, &idx); err != nil {
					t.Fatal(err)
				}
				idx.Manifests[0].Platform = &v1.Platform{OS: "evil", Architecture: "x"}
				b, _ = json.Marshal(idx)
			}
			return name, b
		}), []crypto.PublicKey{&ecKey.PublicKey}, "manifests of"},
		{"a carried blob removed", edit(t, func(name string, b []byte) (string, []byte) {
			if name == "blobs/sha256/"+pair.Changed[0].Hex {
				name = "removed.txt"
			}
			return name, b
		}), []crypto.PublicKey{&ecKey.PublicKey}, pair.Changed[0].String()},
		{"a signature that is not base64", edit(t, func(name string, b []byte) (string, []byte) {
			if name == archive.SignatureFile {
				b = []byte("not base64 !")
			}
			return name, b
		}), []crypto.PublicKey{&ecKey.PublicKey}, "not base64"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dst := newTestRegistry(t, nil)
			dst.write(t, dst.ref("app:v1"), pair.V1)
			dst.resetCounts()
			inc := imo.New(imo.WithPlainHTTP(), imo.WithVerifyKeys(tc.keys...))
			err := inc.Push(ctx, tc.archive, dst.ref("app:v2"))
			if tc.reason == "" {
				if err != nil {
					t.Fatalf("Push() = %v", err)
				}
				return
			}
			if !errors.Is(err, imo.ErrUntrusted) || !strings.Contains(err.Error(), tc.reason) {
				t.Errorf("Push() = %v, want ErrUntrusted saying %q", err, tc.reason)
			}
			if n := requestsTo(dst); n != 0 {
				t.Errorf("a refused push sent %d requests to the destination", n)
			}
		})
	}
	if got := mustPlan(t, ecArchive).Signer; got != archive.Fingerprint(&ecKey.PublicKey) {
		t.Errorf("the plan names the signer %q, want the key's fingerprint", got)
	}
}

// TestSignedSublayerDelta checks that a signed archive's deltas are
// checked too: their digests are in the signed plan.
func TestSignedSublayerDelta(t *testing.T) {
	t.Parallel()
	src := newTestRegistry(t, nil)
	rebuildPair(t, docker, src.Host, func(b []byte) v1.Layer { return compressed(t, encoders[0], b) })
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	path := filepath.Join(t.TempDir(), "delta.tar")
	if _, err := pullToFile(context.Background(), imo.New(imo.WithPlainHTTP(), imo.WithSublayerDeltas(), imo.WithTempDir(t.TempDir()), imo.WithSigner(key)), src.ref("app:v1"), src.ref("app:v2"), path); err != nil {
		t.Fatal(err)
	}
	a, err := archive.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.Verify(context.Background(), []crypto.PublicKey{&key.PublicKey}); err != nil {
		t.Errorf("Verify() of a signed archive with a delta = %v", err)
	}
	a.Close()
	rewriteArchive(t, path, func(name string, b []byte) (string, []byte) {
		if strings.HasPrefix(name, archive.DeltasDir+"/") {
			b[len(b)/2] ^= 1
		}
		return name, b
	})
	if a, err = archive.Open(path); err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	if _, err := a.Verify(context.Background(), []crypto.PublicKey{&key.PublicKey}); !errors.Is(err, imo.ErrUntrusted) {
		t.Errorf("Verify() of an archive with an altered delta = %v, want ErrUntrusted", err)
	}
}

func mustPlan(t *testing.T, path string) *archive.Plan {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var p archive.Plan
	if err := json.Unmarshal(entry(t, b, archive.PlanFile), &p); err != nil {
		t.Fatal(err)
	}
	return &p
}

// opaqueSigner hides its key behind crypto.Signer, as a signer backed by a
// hardware module does.
type opaqueSigner struct{ key *ecdsa.PrivateKey }

func (s opaqueSigner) Public() crypto.PublicKey { return &s.key.PublicKey }

func (s opaqueSigner) Sign(r io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	return s.key.Sign(r, digest, opts)
}
