// Package keys reads the PEM keys imo signs and verifies archives with:
// ECDSA P-256 private keys in PKCS#8 or SEC 1 form and Ed25519 private
// keys in PKCS#8, each perhaps encrypted with a passphrase (PKCS#8 PBES2
// with PBKDF2 and AES-CBC, as openssl genpkey -aes256 writes, or the
// legacy PEM encryption of openssl ec -aes256), and their public keys in
// PKIX form. It uses the standard library's crypto alone.
package keys

import (
	"crypto"
	"crypto/aes"
	"crypto/cipher"
	"crypto/des"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/pbkdf2"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"errors"
	"fmt"
	"hash"
)

// ErrPassphrase means a key is encrypted and the passphrase given is
// missing or wrong.
var ErrPassphrase = errors.New("the key is encrypted: its passphrase is missing or wrong")

// Private reads the first private key of a PEM file. passphrase opens an
// encrypted key; it may be nil for a key in the clear.
func Private(pemBytes, passphrase []byte) (crypto.Signer, error) {
	for rest := pemBytes; ; {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			return nil, errors.New("no PEM private key found")
		}
		der, err := clear(block, passphrase)
		if err != nil {
			return nil, err
		}
		var k any
		switch block.Type {
		case "PRIVATE KEY", "ENCRYPTED PRIVATE KEY":
			k, err = x509.ParsePKCS8PrivateKey(der)
		case "EC PRIVATE KEY":
			k, err = x509.ParseECPrivateKey(der)
		default:
			continue
		}
		switch {
		case err != nil && encrypted(block):
			// What a wrong passphrase decrypts to rarely parses.
			return nil, fmt.Errorf("%w: %v", ErrPassphrase, err)
		case err != nil:
			return nil, fmt.Errorf("reading a %s: %w", block.Type, err)
		}
		return Signer(k)
	}
}

// Signer returns k as a signer imo can use: one whose public key is an
// ECDSA P-256 or Ed25519 key, such as a private key of either kind or a
// signer backed by a hardware module.
func Signer(k any) (crypto.Signer, error) {
	s, ok := k.(crypto.Signer)
	if !ok || s == nil {
		return nil, fmt.Errorf("a %T: imo signs with ECDSA P-256 or Ed25519 keys", k)
	}
	if err := Check(s.Public()); err != nil {
		return nil, err
	}
	return s, nil
}

// Check reports whether k is a public key imo signs and verifies with: an
// ECDSA P-256 or Ed25519 key, well formed.
func Check(k crypto.PublicKey) error {
	switch k := k.(type) {
	case *ecdsa.PublicKey:
		switch {
		case k == nil || k.Curve == nil || k.X == nil || k.Y == nil:
			return errors.New("an empty ECDSA key")
		case k.Curve != elliptic.P256():
			return fmt.Errorf("an ECDSA key on %s: imo uses P-256", k.Curve.Params().Name)
		}
		return nil
	case ed25519.PublicKey:
		if len(k) != ed25519.PublicKeySize {
			return fmt.Errorf("an Ed25519 key of %d bytes, not %d", len(k), ed25519.PublicKeySize)
		}
		return nil
	}
	return fmt.Errorf("a %T: imo uses ECDSA P-256 and Ed25519 keys", k)
}

// Public reads the public keys of a PEM file, every one it holds.
func Public(pemBytes []byte) ([]crypto.PublicKey, error) {
	var out []crypto.PublicKey
	for rest := pemBytes; ; {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		if block.Type != "PUBLIC KEY" {
			continue
		}
		k, err := x509.ParsePKIXPublicKey(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("reading a public key: %w", err)
		}
		if err := Check(k); err != nil {
			return nil, err
		}
		out = append(out, k)
	}
	if len(out) == 0 {
		return nil, errors.New("no PEM public key found")
	}
	return out, nil
}

// encrypted reports whether block holds an encrypted key.
func encrypted(block *pem.Block) bool {
	return block.Type == "ENCRYPTED PRIVATE KEY" || x509.IsEncryptedPEMBlock(block) //nolint:staticcheck // the legacy form
}

// clear returns the DER bytes of block, decrypted with passphrase when
// block is encrypted.
func clear(block *pem.Block, passphrase []byte) ([]byte, error) {
	switch {
	case block.Type == "ENCRYPTED PRIVATE KEY":
		if len(passphrase) == 0 {
			return nil, ErrPassphrase
		}
		return decryptPKCS8(block.Bytes, passphrase)
	case x509.IsEncryptedPEMBlock(block): //nolint:staticcheck // the legacy form openssl ec -aes256 writes
		if len(passphrase) == 0 {
			return nil, ErrPassphrase
		}
		der, err := x509.DecryptPEMBlock(block, passphrase) //nolint:staticcheck // as above
		if err != nil {
			return nil, fmt.Errorf("%w: %v", ErrPassphrase, err)
		}
		return der, nil
	}
	return block.Bytes, nil
}

// The object identifiers of PKCS#5 v2.0 (RFC 8018) that encrypted PKCS#8
// keys use.
var (
	oidPBES2      = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 5, 13}
	oidPBKDF2     = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 5, 12}
	oidHMACSHA1   = asn1.ObjectIdentifier{1, 2, 840, 113549, 2, 7}
	oidHMACSHA256 = asn1.ObjectIdentifier{1, 2, 840, 113549, 2, 9}
	oidAES128CBC  = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 1, 2}
	oidAES192CBC  = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 1, 22}
	oidAES256CBC  = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 1, 42}
	oidDESEDE3CBC = asn1.ObjectIdentifier{1, 2, 840, 113549, 3, 7}
)

// maxIterations bounds the PBKDF2 iterations of a key imo opens, so that a
// malformed key cannot make it work for hours: openssl uses 2,048, and
// current advice is some hundred thousand.
const maxIterations = 10_000_000

type encryptedPrivateKeyInfo struct {
	Algorithm pkix.AlgorithmIdentifier
	Data      []byte
}

type pbes2Params struct {
	KeyDerivation pkix.AlgorithmIdentifier
	Encryption    pkix.AlgorithmIdentifier
}

type pbkdf2Params struct {
	Salt       []byte
	Iterations int
	KeyLength  int                      `asn1:"optional"`
	PRF        pkix.AlgorithmIdentifier `asn1:"optional"`
}

// decryptPKCS8 opens an encrypted PKCS#8 key: PBES2 with PBKDF2 (HMAC with
// SHA-1 or SHA-256) and AES-CBC or 3DES-CBC.
func decryptPKCS8(der, passphrase []byte) ([]byte, error) {
	var info encryptedPrivateKeyInfo
	if _, err := asn1.Unmarshal(der, &info); err != nil {
		return nil, fmt.Errorf("reading an encrypted PKCS#8 key: %w", err)
	}
	if !info.Algorithm.Algorithm.Equal(oidPBES2) {
		return nil, fmt.Errorf("an encrypted PKCS#8 key with %v: imo reads PBES2", info.Algorithm.Algorithm)
	}
	var params pbes2Params
	if _, err := asn1.Unmarshal(info.Algorithm.Parameters.FullBytes, &params); err != nil {
		return nil, fmt.Errorf("reading PBES2 parameters: %w", err)
	}
	if !params.KeyDerivation.Algorithm.Equal(oidPBKDF2) {
		return nil, fmt.Errorf("a key derived with %v: imo reads PBKDF2", params.KeyDerivation.Algorithm)
	}
	var kdf pbkdf2Params
	if _, err := asn1.Unmarshal(params.KeyDerivation.Parameters.FullBytes, &kdf); err != nil {
		return nil, fmt.Errorf("reading PBKDF2 parameters: %w", err)
	}
	if kdf.Iterations < 1 || kdf.Iterations > maxIterations {
		return nil, fmt.Errorf("PBKDF2 with %d iterations: imo reads 1 to %d", kdf.Iterations, maxIterations)
	}
	prf := sha1.New
	switch alg := kdf.PRF.Algorithm; {
	case len(alg) == 0, alg.Equal(oidHMACSHA1):
	case alg.Equal(oidHMACSHA256):
		prf = sha256.New
	default:
		return nil, fmt.Errorf("PBKDF2 with %v: imo reads HMAC-SHA1 and HMAC-SHA256", alg)
	}
	block, keyLen, err := encryption(params.Encryption.Algorithm)
	if err != nil {
		return nil, err
	}
	var iv []byte
	if _, err := asn1.Unmarshal(params.Encryption.Parameters.FullBytes, &iv); err != nil {
		return nil, fmt.Errorf("reading the cipher's IV: %w", err)
	}
	return decryptCBC(info.Data, passphrase, kdf, prf, block, keyLen, iv)
}

// encryption names a PBES2 cipher: how to make its block cipher, and its
// key length.
func encryption(alg asn1.ObjectIdentifier) (func([]byte) (cipher.Block, error), int, error) {
	switch {
	case alg.Equal(oidAES128CBC):
		return aes.NewCipher, 16, nil
	case alg.Equal(oidAES192CBC):
		return aes.NewCipher, 24, nil
	case alg.Equal(oidAES256CBC):
		return aes.NewCipher, 32, nil
	case alg.Equal(oidDESEDE3CBC):
		return des.NewTripleDESCipher, 24, nil
	}
	return nil, 0, fmt.Errorf("a key encrypted with %v: imo reads AES-CBC and 3DES-CBC", alg)
}

// decryptCBC derives the key, decrypts data in CBC mode and removes the
// PKCS#7 padding; bad padding means a wrong passphrase.
func decryptCBC(data, passphrase []byte, kdf pbkdf2Params, prf func() hash.Hash, newBlock func([]byte) (cipher.Block, error), keyLen int, iv []byte) ([]byte, error) {
	key, err := pbkdf2.Key(prf, string(passphrase), kdf.Salt, kdf.Iterations, keyLen)
	if err != nil {
		return nil, err
	}
	block, err := newBlock(key)
	if err != nil {
		return nil, err
	}
	if len(iv) != block.BlockSize() || len(data) == 0 || len(data)%block.BlockSize() != 0 {
		return nil, errors.New("an encrypted PKCS#8 key of a bad size")
	}
	out := make([]byte, len(data))
	cipher.NewCBCDecrypter(block, iv).CryptBlocks(out, data)
	pad := int(out[len(out)-1])
	if pad == 0 || pad > block.BlockSize() {
		return nil, ErrPassphrase
	}
	for _, b := range out[len(out)-pad:] {
		if int(b) != pad {
			return nil, ErrPassphrase
		}
	}
	return out[:len(out)-pad], nil
}
