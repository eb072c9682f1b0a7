package imo

import (
	"context"
	"fmt"
	"io"
	"net/http"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
)

// repoClient talks to one repository through one authenticated transport,
// so the registry is pinged and a token fetched once per operation.
type repoClient struct {
	repo   name.Repository
	rt     http.RoundTripper
	client *http.Client
	scheme string
}

// newRepoClient logs in to repo's registry with auth (or, when auth is nil,
// with what kc holds for it) for the given scopes.
func newRepoClient(ctx context.Context, repo name.Repository, st *sideTransport, auth authn.Authenticator, kc authn.Keychain, scopes []string) (*repoClient, error) {
	if auth == nil {
		var err error
		if auth, err = authn.Resolve(ctx, kc, repo); err != nil {
			return nil, fmt.Errorf("resolving credentials for %s: %w", repo, err)
		}
	}
	host := repo.RegistryStr()
	rt := transport.NewRetry(st.forHost(host))
	rt, err := transport.NewWithContext(ctx, repo.Registry, auth, rt, scopes)
	if err != nil {
		return nil, fmt.Errorf("connecting to registry %s: %w", host, err)
	}
	scheme := "https"
	if st.plainHTTP {
		scheme = "http"
	}
	return &repoClient{repo: repo, rt: rt, client: &http.Client{Transport: rt}, scheme: scheme}, nil
}

func (c *repoClient) options(ctx context.Context) []remote.Option {
	return []remote.Option{remote.WithTransport(c.rt), remote.WithContext(ctx)}
}

// get fetches the manifest ref names, keeping its exact bytes.
func (c *repoClient) get(ctx context.Context, ref name.Reference) (*remote.Descriptor, error) {
	d, err := remote.Get(ref, c.options(ctx)...)
	if err != nil {
		return nil, fmt.Errorf("fetching manifest %s: %w", ref, err)
	}
	return d, nil
}

// manifest fetches the manifest desc names from the repository.
func (c *repoClient) manifest(ctx context.Context, desc v1.Descriptor) ([]byte, error) {
	d, err := c.get(ctx, c.repo.Digest(desc.Digest.String()))
	if err != nil {
		return nil, err
	}
	return d.Manifest, nil
}

func (c *repoClient) blobURL(repo name.Repository, h v1.Hash) string {
	return fmt.Sprintf("%s://%s/v2/%s/blobs/%s", c.scheme, repo.RegistryStr(), repo.RepositoryStr(), h)
}

// blob streams the blob desc names. Reading the result fails with a
// [*DigestMismatchError] if the bytes do not match desc.
func (c *repoClient) blob(ctx context.Context, desc v1.Descriptor, report func(int64)) (io.ReadCloser, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.blobURL(c.repo, desc.Digest), nil)
	if err != nil {
		return nil, err
	}
	resp, err := c.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("fetching blob %s from %s: %w", desc.Digest, c.repo, err)
	}
	if err := transport.CheckError(resp, http.StatusOK); err != nil {
		resp.Body.Close()
		return nil, fmt.Errorf("fetching blob %s from %s: %w", desc.Digest, c.repo, err)
	}
	vr, err := newVerifyingReader(resp.Body, desc, c.repo.String(), report)
	if err != nil {
		resp.Body.Close()
		return nil, err
	}
	return struct {
		io.Reader
		io.Closer
	}{vr, resp.Body}, nil
}

// blobExists asks repo, a repository of the client's registry, whether
// it holds the blob h.
func (c *repoClient) blobExists(ctx context.Context, repo name.Repository, h v1.Hash) (bool, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodHead, c.blobURL(repo, h), nil)
	if err != nil {
		return false, err
	}
	resp, err := c.client.Do(req)
	if err != nil {
		return false, fmt.Errorf("checking blob %s in %s: %w", h, repo, err)
	}
	defer resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusOK:
		return true, nil
	case http.StatusNotFound:
		return false, nil
	}
	return false, fmt.Errorf("checking blob %s in %s: %w", h, repo, transport.CheckError(resp, http.StatusOK))
}

// mount links the blob h from the repository from into the client's
// repository without sending its bytes (a cross-repository blob mount).
func (c *repoClient) mount(ctx context.Context, h v1.Hash, from name.Repository) error {
	u := fmt.Sprintf("%s://%s/v2/%s/blobs/uploads/?mount=%s&from=%s", c.scheme, c.repo.RegistryStr(), c.repo.RepositoryStr(), h, from.RepositoryStr())
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, nil)
	if err != nil {
		return err
	}
	resp, err := c.client.Do(req)
	if err != nil {
		return fmt.Errorf("mounting blob %s from %s into %s: %w", h, from, c.repo, err)
	}
	defer resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusCreated:
		return nil
	case http.StatusAccepted:
		// The registry opened an upload instead of mounting; close it.
		if loc := resp.Header.Get("Location"); loc != "" {
			if u, err := resp.Request.URL.Parse(loc); err == nil {
				if del, err := http.NewRequestWithContext(ctx, http.MethodDelete, u.String(), nil); err == nil {
					if r, err := c.client.Do(del); err == nil {
						r.Body.Close()
					}
				}
			}
		}
		return fmt.Errorf("mounting blob %s from %s into %s: the registry does not support cross-repository mounts", h, from, c.repo)
	}
	return fmt.Errorf("mounting blob %s from %s into %s: %w", h, from, c.repo, transport.CheckError(resp, http.StatusCreated))
}
