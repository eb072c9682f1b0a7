package main

import (
	"bufio"
	"crypto"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/imokit/imo"
	"github.com/imokit/imo/archive"
	"github.com/imokit/imo/internal/keys"
)

// verifyKeyEnv names the public keys every command checks archives
// against: a path, or several separated by the system's path-list
// separator. --verify-key adds to them.
const verifyKeyEnv = "IMO_VERIFY_KEY"

// signPassphraseEnv holds the passphrase of an encrypted --sign-key.
const signPassphraseEnv = "IMO_SIGN_PASSPHRASE"

// verify registers --verify-key.
func (f *flags) verify() *flags {
	f.cmd.Flags().StringArrayVar(&f.verifyKeys, "verify-key", nil, "refuse an archive that no key of this PEM file signed, or whose content its signed plan does not name (repeatable; also "+verifyKeyEnv+")")
	return f
}

// publicKeys reads the keys of --verify-key and IMO_VERIFY_KEY.
func (f *flags) publicKeys() ([]crypto.PublicKey, error) {
	paths := f.verifyKeys
	if env := os.Getenv(verifyKeyEnv); env != "" {
		paths = append(paths, filepath.SplitList(env)...)
	}
	var out []crypto.PublicKey
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			return nil, usagef("--verify-key (or %s): %v", verifyKeyEnv, err)
		}
		ks, err := keys.Public(b)
		if err != nil {
			return nil, usagef("--verify-key %s: %v", p, err)
		}
		out = append(out, ks...)
	}
	return out, nil
}

// trustOptions are the options of --verify-key and IMO_VERIFY_KEY, for a
// command that reads archives.
func (f *flags) trustOptions() ([]imo.Option, error) {
	if f.cmd.Flags().Lookup("verify-key") == nil {
		return nil, nil
	}
	ks, err := f.publicKeys()
	if err != nil || len(ks) == 0 {
		return nil, err
	}
	return []imo.Option{imo.WithVerifyKeys(ks...)}, nil
}

// checksSignatures reports whether the command was given keys to check
// archives against.
func (f *flags) checksSignatures() bool {
	return len(f.verifyKeys) > 0 || os.Getenv(verifyKeyEnv) != ""
}

// signer reads the private key of --sign-key: its passphrase, when it is
// encrypted, comes from IMO_SIGN_PASSPHRASE or, with passphraseStdin, the
// first line of standard input; never from a flag.
func signer(path string, passphraseStdin bool, stdin io.Reader) (crypto.Signer, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, usagef("--sign-key: %v", err)
	}
	pass := []byte(os.Getenv(signPassphraseEnv))
	// Credential helpers the pull runs inherit the environment: the
	// passphrase is not theirs.
	os.Unsetenv(signPassphraseEnv)
	if passphraseStdin {
		line, err := bufio.NewReader(stdin).ReadString('\n')
		if err != nil && line == "" {
			return nil, usagef("--passphrase-stdin: no passphrase on standard input")
		}
		pass = []byte(strings.TrimRight(line, "\r\n"))
	}
	k, err := keys.Private(b, pass)
	if errors.Is(err, keys.ErrPassphrase) && len(pass) == 0 {
		return nil, usagef("--sign-key %s: the key is encrypted: set %s, or give --passphrase-stdin", path, signPassphraseEnv)
	}
	if err != nil {
		return nil, usagef("--sign-key %s: %v", path, err)
	}
	return k, nil
}

// refusedIfInvalid makes an archive that does not read an untrusted one
// when the command checks signatures: with a key set, an archive that is
// not what a signed plan could name is refused, whatever is wrong with it.
func refusedIfInvalid(err error, checks bool) error {
	if checks && errors.Is(err, archive.ErrInvalid) {
		return fmt.Errorf("%w: %w", imo.ErrUntrusted, err)
	}
	return err
}

// noteSigner says who an archive claims signed it when no key checks it.
func noteSigner(w io.Writer, a *archive.Reader, checked bool) {
	if s := a.Signer(); s != "" && !checked {
		fmt.Fprintf(w, "imo: the archive is signed by the key %s (not checked: give --verify-key or set %s)\n", s, verifyKeyEnv)
	}
}
