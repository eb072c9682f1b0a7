package imo_test

import (
	"crypto/tls"
	"crypto/x509"
	"testing"

	"github.com/imokit/imo/internal/sandbox"
)

// testCA is a sandbox CA whose failures end the test.
type testCA struct{ *sandbox.CA }

func newTestCA(t testing.TB) testCA {
	t.Helper()
	ca, err := sandbox.NewCA()
	if err != nil {
		t.Fatal(err)
	}
	return testCA{ca}
}

func (ca testCA) issue(t testing.TB, usage x509.ExtKeyUsage) tls.Certificate {
	t.Helper()
	c, err := ca.Issue(usage)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func (ca testCA) pool() *x509.CertPool { return ca.Pool() }
