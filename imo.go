// Package imo moves container images into places the internet does not
// reach, carrying only what changed.
//
// [Incremental.Pull] compares two images in a registry, a base the far side
// already has and a final one it needs, and streams a tar archive holding
// everything final needs that base lacks. [Incremental.PushVet] checks that
// a destination registry holds every blob such an archive leaves out, and
// [Incremental.Push] uploads the archive so that the destination ends up
// with exactly the final image, digest for digest.
//
// The archive is an OCI image layout in a plain tar (see the archive
// package): every manifest and config byte for byte as the registry served
// them, Docker media types kept, and only the layers that no platform of
// base has. [Incremental.Resolve] resolves a pull of one image or a bundle
// of many into a [Difference] that tells its plan and writes it anywhere;
// [Incremental.VetArchive] and [Incremental.PushArchive] vet and push an
// opened archive and say what became of each image.
package imo

import (
	"crypto/tls"
	"crypto/x509"

	"github.com/imokit/imo/internal/registry"
)

// Incremental pulls, vets and pushes the difference between two images. It
// is safe for concurrent use. Create one with [New].
type Incremental struct {
	opts  options
	base  *registry.Client // the base images' registries
	final *registry.Client // the final images', sharing base's transport
	push  *registry.Client // the destination's
	err   error
}

// New returns an Incremental configured by opts. Invalid or conflicting
// options are reported, wrapped in [ErrInvalidOption], by every method of
// the returned Incremental.
func New(opts ...Option) *Incremental {
	i := &Incremental{opts: defaultOptions()}
	for _, opt := range opts {
		opt(&i.opts)
	}
	if i.err = i.opts.validate(); i.err != nil {
		return i
	}
	o := &i.opts
	side := func(insecure, plainHTTP bool, namespace string) registry.Config {
		return registry.Config{Transport: o.transport, TLS: o.tlsConfig(insecure), Conns: o.jobs, PlainHTTP: plainHTTP,
			Namespace: namespace, Keychain: o.keychain, Policy: o.retry}
	}
	pull := side(o.insecurePull, o.plainHTTP, o.namespace)
	pull.Auth = o.baseAuth
	i.base = registry.New(pull)
	i.final = i.base.WithAuth(o.finalAuth)
	push := side(o.insecurePush, o.plainHTTP, "")
	push.Auth = o.pushAuth
	i.push = registry.New(push)
	return i
}

// closeIdle drops the idle connections of every side, so that no
// connection outlives an operation.
func (i *Incremental) closeIdle() {
	i.base.CloseIdle()
	i.push.CloseIdle()
}

// tlsConfig is the TLS configuration of a side: the CA bundle and client
// certificate of the options, verification skipped when insecure.
func (o *options) tlsConfig(insecure bool) *tls.Config {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, InsecureSkipVerify: insecure} //nolint:gosec // only on request
	if o.caBundle != nil {
		pool, err := x509.SystemCertPool()
		if err != nil {
			pool = x509.NewCertPool()
		}
		pool.AppendCertsFromPEM(o.caBundle) // WithCABundle checked it holds a certificate
		cfg.RootCAs = pool
	}
	if o.clientCert != nil {
		cfg.Certificates = []tls.Certificate{*o.clientCert}
	}
	return cfg
}
