package imo

import (
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/imokit/imo/archive"
	"github.com/imokit/imo/internal/keys"
	"github.com/imokit/imo/internal/reference"
	"github.com/imokit/imo/internal/registry"
	"github.com/imokit/imo/inventory"
)

// defaultJobs is how many blobs imo moves at once unless [WithJobs] says otherwise.
const defaultJobs = 4

// Option configures an [Incremental]. Options are applied in order by [New];
// an invalid or conflicting set is reported, wrapped in [ErrInvalidOption],
// by every method of the [Incremental] that New returns.
type Option func(*options)

type options struct {
	reporter  Reporter
	keychain  authn.Keychain
	baseAuth  authn.Authenticator
	finalAuth authn.Authenticator
	pushAuth  authn.Authenticator
	tempDir   string

	insecurePull bool
	insecurePush bool
	plainHTTP    bool

	allArchitectures bool
	platforms        []v1.Platform
	jobs             int

	caBundle   []byte
	clientCert *tls.Certificate
	transport  http.RoundTripper
	namespace  string
	mountFrom  []string
	retry      registry.Policy
	referrers  bool
	have       []*inventory.Inventory
	sent       []sentArchive
	sublayer   bool
	signer     crypto.Signer
	verifyKeys []crypto.PublicKey
	noResume   bool

	errs []error
}

func defaultOptions() options {
	return options{
		reporter: nopReporter{},
		keychain: authn.DefaultKeychain,
		tempDir:  os.TempDir(),
		jobs:     defaultJobs,
		retry:    registry.Policy{Retries: 4, Wait: 250 * time.Millisecond, Stall: 30 * time.Second},
	}
}

// validate reports options that are invalid on their own or conflict.
func (o *options) validate() error {
	if len(o.errs) > 0 {
		return fmt.Errorf("%w: %w", ErrInvalidOption, o.errs[0])
	}
	switch {
	case o.jobs < 1:
		return fmt.Errorf("%w: WithJobs(%d): jobs must be at least 1", ErrInvalidOption, o.jobs)
	case o.allArchitectures && len(o.platforms) > 0:
		return fmt.Errorf("%w: WithAllArchitectures and WithPlatforms conflict", ErrInvalidOption)
	case o.transport != nil && (o.caBundle != nil || o.clientCert != nil || o.insecurePull || o.insecurePush):
		return fmt.Errorf("%w: WithTransport conflicts with the TLS options (WithCABundle, WithClientCertificate, WithInsecure*): configure TLS in the transport", ErrInvalidOption)
	case o.retry.Retries < 0 || o.retry.Wait < 0 || o.retry.Stall < 0:
		return fmt.Errorf("%w: WithRetries(%d, %s), WithStallTimeout(%s): want no negative values", ErrInvalidOption, o.retry.Retries, o.retry.Wait, o.retry.Stall)
	case o.keychain == nil:
		return fmt.Errorf("%w: WithKeychain(nil)", ErrInvalidOption)
	case slices.Contains(o.have, nil):
		return fmt.Errorf("%w: WithHave(nil)", ErrInvalidOption)
	}
	for _, k := range o.verifyKeys {
		if err := keys.Check(k); err != nil {
			return fmt.Errorf("%w: WithVerifyKeys: %w", ErrInvalidOption, err)
		}
	}
	if o.signer != nil {
		if _, err := keys.Signer(o.signer); err != nil {
			return fmt.Errorf("%w: WithSigner: %w", ErrInvalidOption, err)
		}
	}
	for _, r := range o.mountFrom {
		if !reference.RepositoryPath(r) {
			return fmt.Errorf("%w: WithMountFrom(%q): not a repository path", ErrInvalidOption, r)
		}
	}
	if o.namespace != "" {
		if _, err := name.NewRegistry(o.namespace, name.StrictValidation); err != nil {
			return fmt.Errorf("%w: WithNamespace(%q): %w", ErrInvalidOption, o.namespace, err)
		}
	}
	return nil
}

// WithReporter sends progress events to r. r must be safe for concurrent
// use. By default events are discarded.
func WithReporter(r Reporter) Option {
	return func(o *options) {
		if r == nil {
			r = nopReporter{}
		}
		o.reporter = r
	}
}

// WithReporterWriter renders progress for people on w: a progress bar when w
// is a terminal, one plain line per event otherwise. By default nothing is
// rendered.
func WithReporterWriter(w io.Writer) Option {
	return WithReporter(newWriterReporter(w))
}

// WithKeychain resolves credentials for every registry through kc, unless a
// side has explicit credentials (WithBaseAuth, WithFinalAuth, WithPushAuth).
// The default is [authn.DefaultKeychain]: the Docker config file and its
// credential helpers.
func WithKeychain(kc authn.Keychain) Option {
	return func(o *options) { o.keychain = kc }
}

// WithBaseAuth logs in to the base image's registry with a user name and
// password (basic auth, or a bearer token fetched with them). By default
// credentials come from the keychain.
func WithBaseAuth(user, pass string) Option {
	return func(o *options) { o.baseAuth = basic(user, pass) }
}

// WithFinalAuth logs in to the final image's registry with a user name and
// password. By default credentials come from the keychain.
func WithFinalAuth(user, pass string) Option {
	return func(o *options) { o.finalAuth = basic(user, pass) }
}

// WithPushAuth logs in to the destination registry of PushVet and Push with a
// user name and password. By default credentials come from the keychain.
func WithPushAuth(user, pass string) Option {
	return func(o *options) { o.pushAuth = basic(user, pass) }
}

func basic(user, pass string) authn.Authenticator {
	return authn.FromConfig(authn.AuthConfig{Username: user, Password: pass})
}

// WithTempDir sets where temporary files go: with [WithSublayerDeltas],
// the layers and deltas pull works on and the base contents and rebuilt
// layers push works on. Without sub-layer deltas, imo writes no temporary
// file. The default is [os.TempDir].
func WithTempDir(dir string) Option {
	return func(o *options) { o.tempDir = dir }
}

// WithInsecurePull skips TLS certificate verification when talking to the
// base and final images' registries. By default certificates are verified.
func WithInsecurePull() Option {
	return func(o *options) { o.insecurePull = true }
}

// WithInsecurePush skips TLS certificate verification when talking to the
// destination registry. By default certificates are verified.
func WithInsecurePush() Option {
	return func(o *options) { o.insecurePush = true }
}

// WithInsecure skips TLS certificate verification on every registry, as
// WithInsecurePull and WithInsecurePush together. It does not allow plain
// HTTP; see [WithPlainHTTP].
func WithInsecure() Option {
	return func(o *options) { o.insecurePull, o.insecurePush = true, true }
}

// WithPlainHTTP talks plain HTTP to every registry. By default imo uses
// HTTPS everywhere, loopback and private addresses included, and never
// falls back to plain HTTP on its own.
func WithPlainHTTP() Option {
	return func(o *options) { o.plainHTTP = true }
}

// WithAllArchitectures keeps every platform of a multi-platform image. This
// is the default; the option exists for code written for the original imo
// library, and conflicts with [WithPlatforms].
func WithAllArchitectures() Option {
	return func(o *options) { o.allArchitectures = true }
}

// WithPlatforms keeps only the manifests of a multi-platform final image
// that match one of platforms. A platform matches when its OS and
// architecture are equal and, where the wanted platform names a variant or
// OS version, those are equal too. One match makes the archive carry that
// platform's image manifest alone (its digest is the one in the source
// index); several make it carry a new index listing just those manifests,
// whose digest differs from the source index. No match is a
// [*PlatformError]. A single-platform final image is checked against its
// config. By default every platform is kept and the index digest is
// preserved.
func WithPlatforms(platforms ...v1.Platform) Option {
	return func(o *options) { o.platforms = append(o.platforms, platforms...) }
}

// WithJobs sets how many requests imo makes at once where order does not
// matter: manifest fetches, blob downloads, existence checks and uploads.
// With 2 or more, a pull fetches a blob with [archive.RangedFrom] bytes or
// more left in ranges of [archive.ChunkSize] from a registry, as many at
// once as the jobs allow, which over a long link moves one big layer at
// several connections' speed; the archive's bytes are the same. The
// default is 4.
func WithJobs(n int) Option {
	return func(o *options) { o.jobs = n }
}

// WithCABundle trusts the PEM-encoded certificates in pem, in addition to
// the system's roots, on every registry. By default only the system's roots
// are trusted.
func WithCABundle(pem []byte) Option {
	return func(o *options) {
		if !x509.NewCertPool().AppendCertsFromPEM(pem) {
			o.errs = append(o.errs, fmt.Errorf("WithCABundle: no PEM certificate found"))
			return
		}
		o.caBundle = append([]byte(nil), pem...)
	}
}

// WithClientCertificate presents cert to registries that ask for a client
// certificate (mutual TLS). Load one with [tls.LoadX509KeyPair]. By default
// no client certificate is presented.
func WithClientCertificate(cert tls.Certificate) Option {
	return func(o *options) { o.clientCert = &cert }
}

// WithTransport sends every request through t instead of a transport imo
// builds. imo still adds authentication, retries, the scheme rules and the
// mirror namespace on top. It conflicts with the TLS options, which would
// otherwise be silently ignored. By default imo uses a clone of
// [http.DefaultTransport] configured by the TLS options.
func WithTransport(t http.RoundTripper) Option {
	return func(o *options) { o.transport = t }
}

// WithNamespace pulls through a mirror: every registry API request to the
// base and final images' registry carries the query parameter ns=upstream,
// as containerd does for a configured mirror, so the mirror knows which
// upstream registry (docker.io, quay.io, ...) is meant. By default no
// namespace is sent.
func WithNamespace(upstream string) Option {
	return func(o *options) { o.namespace = upstream }
}

// WithMountFrom lets PushVet and Push take blobs the archive leaves out from
// other repositories of the destination registry (repository paths such
// as "library/base"): vet counts a blob one of them holds as present, and
// push mounts it into the destination repository (a cross-repository blob
// mount) instead of failing. By default only the destination repository
// itself counts.
func WithMountFrom(repos ...string) Option {
	return func(o *options) { o.mountFrom = append(o.mountFrom, repos...) }
}

// WithRetries retries a transient failure (a reset or dropped connection, a
// body cut short, a timeout, or the answers 408, 429, 500, 502, 503 and
// 504) up to retries times, per request, per upload and per blob download,
// waiting initial before the first retry and three times longer before
// each next one, with 10% jitter. A download that fails part-way resumes
// from the last byte received. Permanent failures (401, 403, 404, a digest
// mismatch) are not retried. Zero retries turns retrying off. The default
// is 4 retries starting at 250 ms (waits of 0.25, 0.75, 2.25 and 6.75 s).
func WithRetries(retries int, initial time.Duration) Option {
	return func(o *options) { o.retry.Retries, o.retry.Wait = retries, initial }
}

// WithStallTimeout bounds every wait for a registry's answer: a request
// that gets no response for d (the first contact, a token, a manifest, a
// blob check, an upload's answer), or a body that sends or receives no
// byte for d, is dropped and retried as a transient failure; a blob
// download resumes where it stopped. Registries take longer over some
// answers, which get more: the answer to an upload d more per GiB
// uploaded (the registry may move or hash the blob), a page of the
// catalog four times d. With the default retries a registry that accepts
// connections and never answers fails a request after about five times d
// plus the retry waits. Zero waits for ever (until the context ends). The
// default is 30 seconds.
func WithStallTimeout(d time.Duration) Option {
	return func(o *options) { o.retry.Stall = d }
}

// WithReferrers makes Pull carry, with each final image, the artifacts that
// refer to it or to any of its child manifests: cosign signatures,
// attestations and SBOMs under the tags sha256-HEX.sig, .att and .sbom, and
// OCI 1.1 referrers, found through the referrers API or, on registries
// without it, its tag fallback. They travel as images of the archive, their
// blobs stored once and left out like any other, and Push writes them after
// the image they refer to, with their digests. When [WithPlatforms] keeps
// several platforms of an index, the archive's index is a new one that
// nothing signed; the artifacts of the kept child manifests still travel.
// By default they are left behind.
func WithReferrers() Option {
	return func(o *options) { o.referrers = true }
}

// WithHave makes Pull leave out every blob (layer or config) that one of
// the inventories lists, as well as the base's layers: the inventories say
// what the far side's registry really holds (see [Incremental.Inventory]
// and the inventory package).
// The archive records each inventory used, with when it was taken, and for
// each blob left out the repositories that held it, so that PushVet
// confirms it is still there and Push mounts it from there into the
// destination repository when that lacks it. Manifests are always carried.
// By default no inventory is used.
func WithHave(inventories ...*inventory.Inventory) Option {
	return func(o *options) { o.have = append(o.have, inventories...) }
}

// WithSent makes Pull leave out every config and layer that one of the
// earlier archives carried or left out as already there: on a one-way link
// (a data diode, discs sent by courier), where no inventory comes back, the
// sender's own archives are the record of what the far side holds once
// they are pushed. Each blob so left out says which archive sent it, and
// the plan lists the archives (their file names and plan digests). Only
// the archives' plans are read; they may be closed afterwards. An archive
// of another tool, with no plan, is an [ErrInvalidOption].
func WithSent(archives ...*archive.Reader) Option {
	return func(o *options) {
		for _, a := range archives {
			if a == nil || a.Plan() == nil {
				o.errs = append(o.errs, fmt.Errorf("%w: WithSent: %s is not an imo archive: it has no %s", ErrInvalidOption, nameOf(a), archive.PlanFile))
				continue
			}
			s := sentArchive{PlanSent: archive.PlanSent{Archive: filepath.Base(a.Name()), Plan: a.PlanDigest()}, blobs: map[v1.Hash]bool{}}
			for _, h := range a.Plan().Delivered() {
				s.blobs[h] = true
			}
			s.Blobs = len(s.blobs)
			o.sent = append(o.sent, s)
		}
	}
}

// sentArchive is an earlier archive of WithSent: what it delivered.
type sentArchive struct {
	archive.PlanSent
	blobs map[v1.Hash]bool
}

// nameOf names an archive in an error, nil included.
func nameOf(a *archive.Reader) string {
	if a == nil {
		return "nil"
	}
	return a.Name()
}

// WithSublayerDeltas makes Pull try to carry each layer that final has and
// base lacks as a sub-layer delta against base's layers of the same
// platform: the layer's tar headers, its file contents found in base as
// references, changed files as binary patches, new contents compressed,
// and the recipe that recompresses the rebuilt tar into the exact blob
// (Go's compress/gzip at any level, klauspost gzip, pgzip, zstd). Pull
// downloads base's layers and the changed layers to decide, proves each
// delta by rebuilding the blob and comparing its digest, and uses it only
// when it is at most half the blob; otherwise the whole blob ships. Push
// rebuilds such layers from the base layers the destination holds, checks
// their digests, then uploads them. It costs downloads and CPU on both
// sides, and temporary disk space about the size of the uncompressed base
// layers (in [WithTempDir]), so it is off by default.
func WithSublayerDeltas() Option {
	return func(o *options) { o.sublayer = true }
}

// WithNoResume makes pulls to a file start afresh: the partial file an
// interrupted pull left is written over rather than taken up. By default a
// pull resumes one of the same images.
func WithNoResume() Option {
	return func(o *options) { o.noResume = true }
}

// WithSigner makes pulls sign the archive's plan with signer, an ECDSA
// P-256 or Ed25519 private key: the archive then carries imo.json.sig, the
// base64 of the signature over the exact bytes of imo.json (for ECDSA, an
// ASN.1 DER ECDSA-SHA256 signature, as cosign sign-blob writes), and the
// plan names the key's fingerprint. By default archives are not signed.
func WithSigner(signer crypto.Signer) Option {
	return func(o *options) { o.signer = signer }
}

// WithVerifyKeys makes VetArchive, PushArchive, PushVet and Push refuse,
// before they send a single request, an archive that none of keys signed,
// or whose content is not what its signed plan names (see
// archive.Reader.Verify; every carried blob is read and hashed first). The
// error wraps [ErrUntrusted]. Any of the keys may have signed, for key
// rotation. By default archives are not checked against keys.
func WithVerifyKeys(keys ...crypto.PublicKey) Option {
	return func(o *options) { o.verifyKeys = append(o.verifyKeys, keys...) }
}
