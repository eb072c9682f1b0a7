package main

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net/http"

	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/imokit/imo"
	"github.com/spf13/cobra"
)

// Exit statuses.
const (
	exitOK      = 0
	exitError   = 1 // the operation failed
	exitUsage   = 2 // the command line is wrong
	exitMissing = 3 // vet or push: the destination lacks blobs the archive leaves out; or volumes are missing beyond parity
	exitRefused = 4 // the archive fails verification against the keys given
)

// usageError is a command line that cannot be run.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

func usagef(format string, args ...any) error {
	return usageError{fmt.Errorf(format, args...)}
}

// exactArgs is cobra.ExactArgs reporting a usage error.
func exactArgs(n int) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) != n {
			return usagef("%s takes %d argument(s), got %d", cmd.Name(), n, len(args))
		}
		return nil
	}
}

// report prints err on stderr as one line, with a hint where one helps,
// and returns the exit status for it.
func report(stderr io.Writer, cmd *cobra.Command, err error) int {
	fmt.Fprintf(stderr, "imo: %v\n", err)
	var ue usageError
	switch {
	case errors.As(err, &ue), errors.Is(err, imo.ErrInvalidReference):
		fmt.Fprintf(stderr, "Run '%s --help' for usage.\n", cmd.CommandPath())
		return exitUsage
	case errors.Is(err, imo.ErrMissingBlobs), errors.Is(err, imo.ErrIncompleteVolumes):
		return exitMissing
	case errors.Is(err, imo.ErrUntrusted):
		return exitRefused
	}
	if h := hint(err); h != "" {
		fmt.Fprintf(stderr, "hint: %s\n", h)
	}
	return exitError
}

// hint suggests a fix for the common failures.
func hint(err error) string {
	var te *transport.Error
	var unknownCA x509.UnknownAuthorityError
	var verify *tls.CertificateVerificationError
	switch {
	case errors.As(err, &te) && (te.StatusCode == http.StatusUnauthorized || te.StatusCode == http.StatusForbidden):
		return "the registry refused the credentials: pass --creds USER:PASS (or --user/--password, or docker login)"
	case errors.As(err, &unknownCA) || errors.As(err, &verify):
		return "the registry's certificate is not trusted: pass its CA with --cacert FILE, or --insecure to skip verification"
	case errors.Is(err, http.ErrSchemeMismatch):
		return "the registry speaks plain HTTP: add --plain-http"
	}
	return ""
}
