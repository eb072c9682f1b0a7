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
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
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
	return a.fail(ErrUntrusted, format, args...)
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
	if err := a.checkContents(ctx, ErrUntrusted); err != nil {
		return nil, err
	}
	return signer, nil
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
