package archive

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/imokit/imo/internal/graph"
	"github.com/imokit/imo/internal/keys"
)

// SignatureFile holds the signature of an archive's plan: the base64 of a
// signature over the exact bytes of PlanFile, an ASN.1 DER ECDSA-SHA256
// signature for an ECDSA P-256 key (the format of cosign sign-blob) or an
// Ed25519 signature. A signed plan names its signer's [Fingerprint].
const SignatureFile = PlanFile + ".sig"

// ErrUntrusted means an archive fails verification against the keys a
// reader trusts: it is not signed, no key verifies its signature, or its
// content is not what its signed plan names.
var ErrUntrusted = errors.New("the archive is not trusted")

// Fingerprint names a public key: the SHA-256 of its PKIX DER encoding, in
// hex.
func Fingerprint(pub crypto.PublicKey) string {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return "unknown"
	}
	sum := sha256.Sum256(der)
	return hex.EncodeToString(sum[:])
}

// isFingerprint reports whether s could be a [Fingerprint]: 64 lowercase
// hex digits.
func isFingerprint(s string) bool {
	if len(s) != 2*sha256.Size {
		return false
	}
	for _, c := range s {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}

// Sign signs data with an ECDSA P-256 key (ASN.1 DER over SHA-256) or an
// Ed25519 key (over data itself).
func Sign(signer crypto.Signer, data []byte) ([]byte, error) {
	switch signer.Public().(type) {
	case *ecdsa.PublicKey:
		sum := sha256.Sum256(data)
		return signer.Sign(rand.Reader, sum[:], crypto.SHA256)
	case ed25519.PublicKey:
		return signer.Sign(rand.Reader, data, crypto.Hash(0))
	}
	return nil, fmt.Errorf("signing with a %T key: imo signs with ECDSA P-256 or Ed25519", signer.Public())
}

// verifySignature reports whether sig is pub's signature of data.
func verifySignature(pub crypto.PublicKey, data, sig []byte) bool {
	if keys.Check(pub) != nil {
		return false
	}
	switch pub := pub.(type) {
	case *ecdsa.PublicKey:
		sum := sha256.Sum256(data)
		return ecdsa.VerifyASN1(pub, sum[:], sig)
	case ed25519.PublicKey:
		return ed25519.Verify(pub, data, sig)
	}
	return false
}

// untrusted is an error wrapping ErrUntrusted about the archive.
func (a *Reader) untrusted(format string, args ...any) error {
	return fmt.Errorf("%w: %s: %s", ErrUntrusted, a.name, fmt.Sprintf(format, args...))
}

// Signer is the fingerprint of the key the archive's plan says signed it,
// or "" for an archive that is not signed. It is what the archive claims:
// [Reader.Verify] checks it.
func (a *Reader) Signer() string {
	if _, signed := a.entries[SignatureFile]; !signed || a.plan == nil {
		return ""
	}
	return a.plan.Signer
}

// PlanDigest is the sha256 of the archive's imo.json, as signed; the zero
// hash for an archive without one.
func (a *Reader) PlanDigest() v1.Hash {
	if a.planRaw == nil {
		return v1.Hash{}
	}
	h, _, _ := v1.SHA256(bytes.NewReader(a.planRaw))
	return h
}

// Verify checks that one of keys signed the archive's plan and that the
// archive holds exactly what the signed plan names: index.json its images,
// each manifest tree its manifests, every config and layer its blobs,
// carried or left out as it says, every carried blob and sub-layer delta
// the bytes of its digest (each is read and hashed), and nothing more. It
// returns the key that signed, and otherwise an error wrapping
// [ErrUntrusted] that says what failed. The docker-load manifest.json,
// which imo does not read, is not checked.
func (a *Reader) Verify(ctx context.Context, keys []crypto.PublicKey) (crypto.PublicKey, error) {
	signer, err := a.checkSignature(keys)
	if err != nil {
		return nil, err
	}
	gs, err := a.graphs(ctx)
	if err != nil {
		if ctx.Err() != nil {
			return nil, err
		}
		return nil, fmt.Errorf("%w: %w", ErrUntrusted, err)
	}
	if err := a.checkImages(gs); err != nil {
		return nil, err
	}
	if err := a.checkBlobs(gs); err != nil {
		return nil, err
	}
	return signer, a.checkBytes(ctx)
}

// checkSignature finds the key of keys that signed the plan.
func (a *Reader) checkSignature(keys []crypto.PublicKey) (crypto.PublicKey, error) {
	raw, ok := a.section(SignatureFile)
	if !ok || a.planRaw == nil {
		return nil, a.untrusted("it is not signed (no %s)", SignatureFile)
	}
	text, err := io.ReadAll(io.LimitReader(raw, 4096))
	if err != nil {
		return nil, fmt.Errorf("reading %s from %s: %w", SignatureFile, a.name, err)
	}
	sig, err := base64.StdEncoding.DecodeString(strings.TrimSpace(string(text)))
	if err != nil {
		return nil, a.untrusted("%s is not base64: %v", SignatureFile, err)
	}
	var tried []string
	for _, k := range keys {
		if verifySignature(k, a.planRaw, sig) {
			if fp := Fingerprint(k); a.plan.Signer != "" && a.plan.Signer != fp {
				return nil, a.untrusted("%s names the signer %s, but %s signed it", PlanFile, a.plan.Signer, fp)
			}
			return k, nil
		}
		tried = append(tried, Fingerprint(k))
	}
	return nil, a.untrusted("no key given verifies its signature (tried %s)", strings.Join(tried, ", "))
}

// checkImages checks index.json and each image's manifests against the
// plan's images.
func (a *Reader) checkImages(gs []*graph.Graph) error {
	if len(a.plan.Images) != len(a.index.Manifests) {
		return a.untrusted("%s lists %d images, %s %d", IndexFile, len(a.index.Manifests), PlanFile, len(a.plan.Images))
	}
	for n, d := range a.index.Manifests {
		img := a.plan.Images[n]
		if d.Digest != img.Final.Digest || d.Annotations[RefNameAnnotation] != img.Final.Reference {
			return a.untrusted("%s names %s %s as image %d, %s names %s %s", IndexFile, d.Annotations[RefNameAnnotation], d.Digest, n+1, PlanFile, img.Final.Reference, img.Final.Digest)
		}
		got := gs[n].Descriptors()
		if !slices.EqualFunc(got, img.Manifests, sameDescriptor) {
			return a.untrusted("the manifests of %s are not those %s names", img.Final.Reference, PlanFile)
		}
	}
	return nil
}

// sameDescriptor reports whether x and y name the same manifest the same
// way: digest, size, media type (which decides how it is read and the
// Content-Type it is pushed with) and platform.
func sameDescriptor(x, y v1.Descriptor) bool {
	if x.Digest != y.Digest || x.Size != y.Size || x.MediaType != y.MediaType || (x.Platform == nil) != (y.Platform == nil) {
		return false
	}
	return x.Platform == nil || x.Platform.Equals(*y.Platform)
}

// checkBlobs checks that the images' configs and layers are the plan's
// blobs, carried or left out as it says, and that the archive carries no
// other blob or delta.
func (a *Reader) checkBlobs(gs []*graph.Graph) error {
	all := graph.Merge(gs)
	planned := map[v1.Hash]PlanBlob{}
	for _, b := range a.plan.Blobs {
		planned[b.Digest] = b
	}
	if len(planned) != len(all.Blobs) {
		return a.untrusted("the images use %d configs and layers, %s names %d", len(all.Blobs), PlanFile, len(planned))
	}
	expected := map[string]bool{}
	for _, m := range all.Manifests {
		expected[BlobName(m.Desc.Digest)] = true
	}
	for _, b := range all.Blobs {
		pb, ok := planned[b.Desc.Digest]
		switch {
		case !ok || pb.Size != b.Desc.Size:
			return a.untrusted("blob %s is not the one %s names", b.Desc.Digest, PlanFile)
		case pb.Included != a.Has(pb.Digest):
			return a.untrusted("%s says blob %s is carried: %v; the archive carries it: %v", PlanFile, pb.Digest, pb.Included, a.Has(pb.Digest))
		case pb.Delta != nil && pb.Delta.Digest == (v1.Hash{}):
			return a.untrusted("%s names no digest for the delta of %s", PlanFile, pb.Digest)
		}
		if pb.Included {
			expected[BlobName(pb.Digest)] = true
		}
		if pb.Delta != nil {
			expected[DeltaName(pb.Digest)] = true
		}
	}
	for name := range a.entries {
		if (strings.HasPrefix(name, blobsDir+"/") || strings.HasPrefix(name, DeltasDir+"/")) && !expected[name] {
			return a.untrusted("it carries %s, which %s does not name", name, PlanFile)
		}
	}
	return nil
}

// checkBytes hashes every carried blob and delta against the plan.
func (a *Reader) checkBytes(ctx context.Context) error {
	for _, b := range a.plan.Blobs {
		if err := ctx.Err(); err != nil {
			return err
		}
		if b.Included {
			if err := a.drain(ctx, BlobName(b.Digest), v1.Descriptor{Digest: b.Digest, Size: b.Size}); err != nil {
				return err
			}
		}
		if b.Delta != nil {
			if err := a.drain(ctx, DeltaName(b.Digest), v1.Descriptor{Digest: b.Delta.Digest, Size: b.Delta.Size}); err != nil {
				return err
			}
		}
	}
	return nil
}

// drain reads the entry name to its end through a check against desc,
// stopping when ctx ends.
func (a *Reader) drain(ctx context.Context, name string, desc v1.Descriptor) error {
	s, ok := a.section(name)
	if !ok {
		return a.untrusted("no %s", name)
	}
	rc, err := a.verified(s, desc)
	if err == nil {
		_, err = io.Copy(io.Discard, contextReader{ctx: ctx, r: rc})
	}
	switch {
	case ctx.Err() != nil:
		return ctx.Err()
	case err != nil:
		return a.untrusted("%v", err)
	}
	return nil
}
