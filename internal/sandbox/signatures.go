package sandbox

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// Media types and annotations of cosign's signatures and attestations.
const (
	SimpleSigningType   = "application/vnd.dev.cosign.simplesigning.v1+json"
	DSSEType            = "application/vnd.dsse.envelope.v1+json"
	InTotoType          = "application/vnd.in-toto+json"
	SignatureAnnotation = "dev.cosignproject.cosign/signature"
	SBOMArtifactType    = "application/spdx+json"
)

// Signer signs images the way cosign does with a key pair: an ECDSA P-256
// key made for the test.
type Signer struct {
	key *ecdsa.PrivateKey
}

// NewSigner makes a signer with a fresh key.
func NewSigner() (*Signer, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	return &Signer{key: key}, nil
}

// simpleSigning is cosign's payload: what is signed is the image's digest.
type simpleSigning struct {
	Critical struct {
		Identity struct {
			DockerReference string `json:"docker-reference"`
		} `json:"identity"`
		Image struct {
			DockerManifestDigest string `json:"docker-manifest-digest"`
		} `json:"image"`
		Type string `json:"type"`
	} `json:"critical"`
	Optional map[string]string `json:"optional"`
}

// Signature returns the signature image cosign pushes to the tag
// sha256-HEX.sig for the image repo@digest: one layer holding the
// simple-signing payload, its ECDSA signature in the layer's annotation.
func (s *Signer) Signature(repo string, digest v1.Hash) (v1.Image, error) {
	var p simpleSigning
	p.Critical.Identity.DockerReference = repo
	p.Critical.Image.DockerManifestDigest = digest.String()
	p.Critical.Type = "cosign container image signature"
	payload, err := json.Marshal(p)
	if err != nil {
		return nil, err
	}
	sig, err := s.sign(payload)
	if err != nil {
		return nil, err
	}
	return artifact(payload, SimpleSigningType, map[string]string{SignatureAnnotation: sig})
}

// statement is an in-toto statement about one image.
type statement struct {
	Type          string          `json:"_type"`
	PredicateType string          `json:"predicateType"`
	Subject       []subject       `json:"subject"`
	Predicate     json.RawMessage `json:"predicate"`
}

type subject struct {
	Name   string            `json:"name"`
	Digest map[string]string `json:"digest"`
}

// envelope is a DSSE envelope.
type envelope struct {
	PayloadType string `json:"payloadType"`
	Payload     string `json:"payload"`
	Signatures  []struct {
		KeyID string `json:"keyid"`
		Sig   string `json:"sig"`
	} `json:"signatures"`
}

// Attestation returns the attestation image cosign pushes to the tag
// sha256-HEX.att: an in-toto statement about repo@digest with the given
// predicate, in a signed DSSE envelope.
func (s *Signer) Attestation(repo string, digest v1.Hash, predicateType string, predicate []byte) (v1.Image, error) {
	st, err := json.Marshal(statement{
		Type: "https://in-toto.io/Statement/v0.1", PredicateType: predicateType,
		Subject:   []subject{{Name: repo, Digest: map[string]string{digest.Algorithm: digest.Hex}}},
		Predicate: predicate,
	})
	if err != nil {
		return nil, err
	}
	sig, err := s.sign(pae(InTotoType, st))
	if err != nil {
		return nil, err
	}
	env := envelope{PayloadType: InTotoType, Payload: base64.StdEncoding.EncodeToString(st)}
	env.Signatures = append(env.Signatures, struct {
		KeyID string `json:"keyid"`
		Sig   string `json:"sig"`
	}{Sig: sig})
	b, err := json.Marshal(env)
	if err != nil {
		return nil, err
	}
	return artifact(b, DSSEType, map[string]string{"predicateType": predicateType})
}

// SBOM returns an OCI 1.1 artifact of type [SBOMArtifactType] whose subject
// is the manifest subject: what the referrers API lists.
func SBOM(subject v1.Descriptor, doc []byte) (v1.Image, error) {
	img, err := artifact(doc, SBOMArtifactType, nil)
	if err != nil {
		return nil, err
	}
	img = mutate.ConfigMediaType(img, SBOMArtifactType)
	s, ok := mutate.Subject(img, v1.Descriptor{MediaType: subject.MediaType, Digest: subject.Digest, Size: subject.Size}).(v1.Image)
	if !ok {
		return nil, fmt.Errorf("SBOM: the artifact with a subject is not an image")
	}
	return s, nil
}

// VerifySignature checks that sig is a signature by s of exactly digest.
func (s *Signer) VerifySignature(sig v1.Image, digest v1.Hash) error {
	payload, ann, err := onlyLayer(sig, SimpleSigningType)
	if err != nil {
		return err
	}
	if err := s.verify(payload, ann[SignatureAnnotation]); err != nil {
		return err
	}
	var p simpleSigning
	if err := json.Unmarshal(payload, &p); err != nil {
		return err
	}
	if p.Critical.Image.DockerManifestDigest != digest.String() {
		return fmt.Errorf("the signature is of %s, not %s", p.Critical.Image.DockerManifestDigest, digest)
	}
	return nil
}

// VerifyAttestation checks that att is an attestation by s about exactly
// digest.
func (s *Signer) VerifyAttestation(att v1.Image, digest v1.Hash) error {
	b, _, err := onlyLayer(att, DSSEType)
	if err != nil {
		return err
	}
	var env envelope
	if err := json.Unmarshal(b, &env); err != nil {
		return err
	}
	st, err := base64.StdEncoding.DecodeString(env.Payload)
	if err != nil || len(env.Signatures) != 1 {
		return fmt.Errorf("malformed envelope")
	}
	if err := s.verify(pae(env.PayloadType, st), env.Signatures[0].Sig); err != nil {
		return err
	}
	var stmt statement
	if err := json.Unmarshal(st, &stmt); err != nil {
		return err
	}
	if len(stmt.Subject) != 1 || stmt.Subject[0].Digest[digest.Algorithm] != digest.Hex {
		return fmt.Errorf("the attestation is not about %s", digest)
	}
	return nil
}

// sign returns the base64 ASN.1 ECDSA signature of msg's SHA-256.
func (s *Signer) sign(msg []byte) (string, error) {
	h := sha256.Sum256(msg)
	sig, err := ecdsa.SignASN1(rand.Reader, s.key, h[:])
	if err != nil {
		return "", err
	}
	return base64.StdEncoding.EncodeToString(sig), nil
}

func (s *Signer) verify(msg []byte, sig string) error {
	raw, err := base64.StdEncoding.DecodeString(sig)
	if err != nil {
		return fmt.Errorf("signature is not base64: %w", err)
	}
	h := sha256.Sum256(msg)
	if !ecdsa.VerifyASN1(&s.key.PublicKey, h[:], raw) {
		return fmt.Errorf("the signature does not verify")
	}
	return nil
}

// pae is DSSE's pre-authentication encoding.
func pae(payloadType string, payload []byte) []byte {
	return fmt.Appendf(nil, "DSSEv1 %d %s %d %s", len(payloadType), payloadType, len(payload), payload)
}

// artifact is an OCI image with one layer of content, of media type mt,
// annotated with ann.
func artifact(content []byte, mt types.MediaType, ann map[string]string) (v1.Image, error) {
	img, err := mutate.Append(empty.Image, mutate.Addendum{Layer: static.NewLayer(content, mt), Annotations: ann})
	if err != nil {
		return nil, err
	}
	return mutate.ConfigMediaType(mutate.MediaType(img, types.OCIManifestSchema1), types.OCIConfigJSON), nil
}

// onlyLayer returns the content and annotations of img's single layer,
// which must be of media type mt.
func onlyLayer(img v1.Image, mt types.MediaType) ([]byte, map[string]string, error) {
	m, err := img.Manifest()
	if err != nil {
		return nil, nil, err
	}
	if len(m.Layers) != 1 || m.Layers[0].MediaType != mt {
		return nil, nil, fmt.Errorf("want one layer of type %s", mt)
	}
	l, err := img.LayerByDigest(m.Layers[0].Digest)
	if err != nil {
		return nil, nil, err
	}
	rc, err := l.Compressed()
	if err != nil {
		return nil, nil, err
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	return b, m.Layers[0].Annotations, err
}
