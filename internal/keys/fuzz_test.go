package keys

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"testing"
)

// seeds are PEM files of every form the package reads: keys made here in
// the clear and, from testdata, keys openssl encrypted with "s3cret".
func seeds(f *testing.F) [][]byte {
	f.Helper()
	ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	edPub, ed, _ := ed25519.GenerateKey(rand.Reader)
	var out [][]byte
	for _, k := range []any{ec, ed} {
		der, err := x509.MarshalPKCS8PrivateKey(k)
		if err != nil {
			f.Fatal(err)
		}
		out = append(out, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))
	}
	sec1, _ := x509.MarshalECPrivateKey(ec)
	out = append(out, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: sec1}))
	for _, k := range []any{&ec.PublicKey, edPub} {
		der, err := x509.MarshalPKIXPublicKey(k)
		if err != nil {
			f.Fatal(err)
		}
		out = append(out, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))
	}
	files, _ := filepath.Glob(filepath.Join("testdata", "*"))
	for _, name := range files {
		b, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		out = append(out, b)
	}
	return out
}

// FuzzPrivate feeds Private arbitrary PEM and passphrases: it must return
// a usable signer or an error, never panic.
func FuzzPrivate(f *testing.F) {
	for _, s := range seeds(f) {
		f.Add(s, []byte("s3cret"))
		f.Add(s, []byte(nil))
	}
	f.Fuzz(func(t *testing.T, b, passphrase []byte) {
		k, err := Private(b, passphrase)
		if err != nil {
			return
		}
		msg := []byte("imo.json")
		switch k := k.(type) {
		case *ecdsa.PrivateKey:
			sum := sha256.Sum256(msg)
			sig, err := ecdsa.SignASN1(rand.Reader, k, sum[:])
			if err != nil || !ecdsa.VerifyASN1(&k.PublicKey, sum[:], sig) {
				t.Errorf("Private returned an ECDSA key that does not sign: %v", err)
			}
		case ed25519.PrivateKey:
			if !ed25519.Verify(k.Public().(ed25519.PublicKey), msg, ed25519.Sign(k, msg)) {
				t.Errorf("Private returned an Ed25519 key that does not sign")
			}
		default:
			t.Errorf("Private returned a %T", k)
		}
	})
}

// FuzzPublic feeds Public arbitrary PEM: it must return keys of the kinds
// imo verifies with, or an error, never panic.
func FuzzPublic(f *testing.F) {
	for _, s := range seeds(f) {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		ks, err := Public(b)
		if err != nil {
			return
		}
		for _, k := range ks {
			switch k := k.(type) {
			case *ecdsa.PublicKey:
				if k.Curve != elliptic.P256() {
					t.Errorf("Public returned a key on %s", k.Curve.Params().Name)
				}
			case ed25519.PublicKey:
			default:
				t.Errorf("Public returned a %T", k)
			}
		}
	})
}
