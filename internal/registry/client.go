// Package registry speaks the registry protocol for imo: one [Client] per
// side of the gap (its transport, credentials and retry policy) opens
// [Repository] values, which fetch manifests and verified, resumable
// blobs, ask whether blobs exist, mount, upload, put manifests and list
// tags. Every HTTP request imo makes is made here.
package registry

import (
	"context"
	"crypto/tls"
	"fmt"
	"net/http"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
)

// Config describes how a side reaches its registries.
type Config struct {
	// Transport carries every request; when nil, the client builds one
	// from TLS, a clone of http.DefaultTransport.
	Transport http.RoundTripper
	// TLS configures the transport the client builds.
	TLS *tls.Config
	// Conns is how many idle connections per host the built transport
	// keeps (at least 2).
	Conns int
	// PlainHTTP makes every registry of the side speak plain HTTP instead
	// of HTTPS; neither falls back to the other.
	PlainHTTP bool
	// Namespace, when not empty, is sent as ns=Namespace on every registry
	// API request, for pull-through mirrors.
	Namespace string
	// Auth logs in to every registry of the side; when nil, credentials
	// come from Keychain.
	Auth     authn.Authenticator
	Keychain authn.Keychain
	// Policy says how failures are retried and silence is bounded.
	Policy Policy
}

// Client opens repositories of the registries of one side. It is safe for
// concurrent use.
type Client struct {
	base      http.RoundTripper
	owned     *http.Transport // base, when the client built it
	plainHTTP bool
	namespace string
	auth      authn.Authenticator
	keychain  authn.Keychain
	policy    Policy
}

// New returns a client for cfg.
func New(cfg Config) *Client {
	c := &Client{base: cfg.Transport, plainHTTP: cfg.PlainHTTP, namespace: cfg.Namespace, auth: cfg.Auth, keychain: cfg.Keychain, policy: cfg.Policy}
	if c.base == nil {
		t := http.DefaultTransport.(*http.Transport).Clone()
		t.TLSClientConfig = cfg.TLS
		t.MaxIdleConnsPerHost = max(cfg.Conns, 2)
		c.base, c.owned = t, t
	}
	return c
}

// WithAuth is the client logging in with auth instead, sharing its
// transport; a nil auth keeps the client's.
func (c *Client) WithAuth(auth authn.Authenticator) *Client {
	if auth == nil {
		return c
	}
	out := *c
	out.auth = auth
	return &out
}

// PlainHTTP reports whether the side speaks plain HTTP.
func (c *Client) PlainHTTP() bool { return c.plainHTTP }

// NameOptions are the options to parse the side's references with.
func (c *Client) NameOptions() []name.Option {
	if c.plainHTTP {
		return []name.Option{name.Insecure}
	}
	return nil
}

// CloseIdle drops the idle connections of a transport the client built,
// so that no connection (and no goroutine serving it) outlives an
// operation.
func (c *Client) CloseIdle() {
	if c.owned != nil {
		c.owned.CloseIdleConnections()
	}
}

func (c *Client) scheme() string {
	if c.plainHTTP {
		return "http"
	}
	return "https"
}

// roundTripper is the transport for requests to one registry host: the
// scheme pinned, the namespace added, transient failures retried and
// silences bounded.
func (c *Client) roundTripper(host string) http.RoundTripper {
	return c.policy.wrap(&hostTransport{next: c.base, host: host, scheme: c.scheme(), namespace: c.namespace})
}

// login authenticates to reg for scopes, with the credentials the
// keychain holds for what (a repository, or the registry itself): it pings
// the registry and fetches a token once, so that every request of an
// operation reuses them.
func (c *Client) login(ctx context.Context, what authn.Resource, reg name.Registry, scopes []string) (http.RoundTripper, error) {
	auth := c.auth
	if auth == nil {
		var err error
		if auth, err = authn.Resolve(ctx, c.keychain, what); err != nil {
			return nil, fmt.Errorf("resolving credentials for %s: %w", what, err)
		}
	}
	rt, err := transport.NewWithContext(ctx, reg, auth, c.roundTripper(reg.RegistryStr()), scopes)
	if err != nil {
		return nil, connectError(reg.RegistryStr(), c.plainHTTP, err)
	}
	return rt, nil
}

// Open logs in to repo's registry for scopes (pull access when none are
// given) and returns the repository.
func (c *Client) Open(ctx context.Context, repo name.Repository, scopes ...string) (*Repository, error) {
	if len(scopes) == 0 {
		scopes = []string{repo.Scope(transport.PullScope)}
	}
	rt, err := c.login(ctx, repo, repo.Registry, scopes)
	if err != nil {
		return nil, err
	}
	return &Repository{repo: repo, rt: rt, client: &http.Client{Transport: rt}, scheme: c.scheme(), policy: c.policy}, nil
}

// Catalog lists the repositories of reg with the catalog API, following
// every page.
func (c *Client) Catalog(ctx context.Context, reg name.Registry) ([]string, error) {
	rt, err := c.login(ctx, reg, reg, []string{reg.Scope(transport.PullScope)})
	if err != nil {
		return nil, err
	}
	return listAll(ctx, &http.Client{Transport: rt}, c.policy, c.scheme(), reg.RegistryStr(), "/v2/_catalog", "repositories")
}
