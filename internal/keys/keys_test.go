package keys

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

func TestPrivate(t *testing.T) {
	ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	_, ed, _ := ed25519.GenerateKey(rand.Reader)
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	pkcs8 := func(k any) []byte {
		der, err := x509.MarshalPKCS8PrivateKey(k)
		if err != nil {
			t.Fatal(err)
		}
		return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
	}
	sec1, _ := x509.MarshalECPrivateKey(ec)
	tests := []struct {
		name string
		pem  []byte
		ok   bool
	}{
		{"ECDSA PKCS#8", pkcs8(ec), true},
		{"ECDSA SEC 1", pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: sec1}), true},
		{"Ed25519 PKCS#8", pkcs8(ed), true},
		{"ECDSA P-384", pkcs8(p384), false},
		{"not PEM", []byte("hello"), false},
	}
	for _, tc := range tests {
		if _, err := Private(tc.pem, nil); (err == nil) != tc.ok {
			t.Errorf("Private(%s) = %v, want ok %v", tc.name, err, tc.ok)
		}
	}
}

// TestOpenSSLKeys reads the keys openssl writes, encrypted both ways.
func TestOpenSSLKeys(t *testing.T) {
	if _, err := exec.LookPath("openssl"); err != nil {
		if os.Getenv("IMO_INTEGRATION") != "" {
			t.Fatal("openssl not installed: apt-get install openssl")
		}
		t.Skip("openssl not installed: apt-get install openssl (set IMO_INTEGRATION=1 to make this a failure)")
	}
	dir := t.TempDir()
	run := func(args ...string) {
		t.Helper()
		if out, err := exec.Command("openssl", args...).CombinedOutput(); err != nil {
			t.Fatalf("openssl %v: %v\n%s", args, err, out)
		}
	}
	path := func(name string) string { return filepath.Join(dir, name) }
	run("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", path("ec.pem"))
	run("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-aes256", "-pass", "pass:s3cret", "-out", path("pbes2.pem"))
	run("ec", "-in", path("ec.pem"), "-aes256", "-passout", "pass:s3cret", "-out", path("legacy.pem"))
	run("genpkey", "-algorithm", "ed25519", "-aes-128-cbc", "-pass", "pass:s3cret", "-out", path("ed.pem"))
	run("pkey", "-in", path("ec.pem"), "-pubout", "-out", path("ec.pub"))
	for _, name := range []string{"pbes2.pem", "legacy.pem", "ed.pem"} {
		b, _ := os.ReadFile(path(name))
		if _, err := Private(b, []byte("s3cret")); err != nil {
			t.Errorf("Private(%s) = %v", name, err)
		}
		if _, err := Private(b, []byte("wrong")); !errors.Is(err, ErrPassphrase) {
			t.Errorf("Private(%s, a wrong passphrase) = %v, want ErrPassphrase", name, err)
		}
		if _, err := Private(b, nil); !errors.Is(err, ErrPassphrase) {
			t.Errorf("Private(%s, no passphrase) = %v, want ErrPassphrase", name, err)
		}
	}
	priv, _ := os.ReadFile(path("ec.pem"))
	pub, _ := os.ReadFile(path("ec.pub"))
	k, err := Private(priv, nil)
	if err != nil {
		t.Fatal(err)
	}
	pubs, err := Public(pub)
	if err != nil || len(pubs) != 1 || !k.Public().(*ecdsa.PublicKey).Equal(pubs[0]) {
		t.Errorf("Public() = %v, %v; want the key's public half", pubs, err)
	}
}
