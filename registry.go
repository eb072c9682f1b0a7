package imo

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// repoClient talks to one repository through one authenticated transport,
// so the registry is pinged and a token fetched once per operation.
type repoClient struct {
	repo   name.Repository
	rt     http.RoundTripper
	client *http.Client
	scheme string
	retry  retryPolicy
}

// newRepoClient logs in to repo's registry with auth (or, when auth is nil,
// with what kc holds for it) for the given scopes.
func newRepoClient(ctx context.Context, repo name.Repository, st *sideTransport, auth authn.Authenticator, kc authn.Keychain, retry retryPolicy, scopes []string) (*repoClient, error) {
	if auth == nil {
		var err error
		if auth, err = authn.Resolve(ctx, kc, repo); err != nil {
			return nil, fmt.Errorf("resolving credentials for %s: %w", repo, err)
		}
	}
	host := repo.RegistryStr()
	rt := retry.wrap(st.forHost(host))
	rt, err := transport.NewWithContext(ctx, repo.Registry, auth, rt, scopes)
	if err != nil {
		return nil, connectError(host, st.plainHTTP, err)
	}
	scheme := "https"
	if st.plainHTTP {
		scheme = "http"
	}
	return &repoClient{repo: repo, rt: rt, client: &http.Client{Transport: rt}, scheme: scheme, retry: retry}, nil
}

func (c *repoClient) options(ctx context.Context) []remote.Option {
	return []remote.Option{remote.WithTransport(c.rt), remote.WithContext(ctx)}
}

// get fetches the manifest ref names, keeping its exact bytes. A
// transient failure, the body cut short included, is retried.
func (c *repoClient) get(ctx context.Context, ref name.Reference) (*remote.Descriptor, error) {
	var d *remote.Descriptor
	err := c.retry.do(ctx, func() error {
		var err error
		d, err = remote.Get(ref, c.options(ctx)...)
		return answer(err)
	})
	if err != nil {
		return nil, fmt.Errorf("fetching manifest %s: %w", ref, err)
	}
	return d, nil
}

// resolve fetches the manifest r names. When r names both a tag and a
// digest, the digest is fetched and the tag must point at it.
func (c *repoClient) resolve(ctx context.Context, r imageRef) (manifestNode, error) {
	d, err := c.get(ctx, r.fetch())
	if err != nil {
		return manifestNode{}, err
	}
	if r.tag != "" && r.digest != "" {
		tag := r.repo.Tag(r.tag)
		var td *v1.Descriptor
		err := c.retry.do(ctx, func() error {
			var err error
			td, err = remote.Head(tag, c.options(ctx)...)
			return answer(err)
		})
		if err != nil {
			return manifestNode{}, fmt.Errorf("checking the tag of %s: %w", r, err)
		}
		if td.Digest.String() != r.digest {
			return manifestNode{}, fmt.Errorf("%s: the tag %s points at %s, not at the digest the reference names", r, tag, td.Digest)
		}
	}
	return manifestNode{desc: v1.Descriptor{MediaType: d.MediaType, Digest: d.Digest, Size: d.Size}, raw: d.Manifest}, nil
}

// manifestMediaTypes are the manifests imo asks registries for.
var manifestMediaTypes = strings.Join([]string{
	string(types.OCIImageIndex), string(types.OCIManifestSchema1),
	string(types.DockerManifestList), string(types.DockerManifestSchema2),
}, ",")

// manifest fetches the manifest desc names from the repository, by digest,
// and checks it against desc.
func (c *repoClient) manifest(ctx context.Context, desc v1.Descriptor) ([]byte, error) {
	if desc.Size > maxMetadataSize {
		return nil, fmt.Errorf("%w: manifest %s in %s declares %d bytes, more than the %d allowed", ErrInvalidManifest, desc.Digest, c.repo, desc.Size, maxMetadataSize)
	}
	var raw []byte
	err := c.retry.do(ctx, func() error {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("%s://%s/v2/%s/manifests/%s", c.scheme, c.repo.RegistryStr(), c.repo.RepositoryStr(), desc.Digest), nil)
		if err != nil {
			return err
		}
		req.Header.Set("Accept", manifestMediaTypes)
		resp, err := c.client.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		if err := checkAnswer(resp, http.StatusOK); err != nil {
			return err
		}
		raw, err = io.ReadAll(io.LimitReader(resp.Body, desc.Size+1))
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("fetching manifest %s from %s: %w", desc.Digest, c.repo, err)
	}
	if err := checkManifest(manifestNode{desc: desc, raw: raw}, c.repo.String()); err != nil {
		return nil, err
	}
	return raw, nil
}

func (c *repoClient) blobURL(repo name.Repository, h v1.Hash) string {
	return fmt.Sprintf("%s://%s/v2/%s/blobs/%s", c.scheme, repo.RegistryStr(), repo.RepositoryStr(), h)
}

// blob streams the blob desc names. Reading the result fails with a
// [*DigestMismatchError] if the bytes do not match desc; a connection lost
// part-way is resumed (see [resumingBody]).
func (c *repoClient) blob(ctx context.Context, desc v1.Descriptor, report func(int64)) (io.ReadCloser, error) {
	rb, err := openResumingBody(ctx, c, desc)
	if err != nil {
		return nil, err
	}
	vr, err := newVerifyingReader(rb, desc, c.repo.String(), report)
	if err != nil {
		rb.Close()
		return nil, err
	}
	return struct {
		io.Reader
		io.Closer
	}{vr, rb}, nil
}

// openBlob starts fetching the blob h from byte off on. A registry that
// ignores Range answers with the whole blob; skip is then how many bytes
// the caller must discard first.
func (c *repoClient) openBlob(ctx context.Context, h v1.Hash, off, size int64) (body io.ReadCloser, skip int64, err error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.blobURL(c.repo, h), nil)
	if err != nil {
		return nil, 0, err
	}
	if off > 0 {
		req.Header.Set("Range", fmt.Sprintf("bytes=%d-%d", off, size-1))
	}
	resp, err := c.client.Do(req)
	if err != nil {
		return nil, 0, fmt.Errorf("fetching blob %s from %s: %w", h, c.repo, err)
	}
	switch {
	case off > 0 && resp.StatusCode == http.StatusPartialContent:
		var start int64
		if _, err := fmt.Sscanf(resp.Header.Get("Content-Range"), "bytes %d-", &start); err != nil || start != off {
			resp.Body.Close()
			return nil, 0, fmt.Errorf("fetching blob %s from %s: asked for byte %d on, got range %q", h, c.repo, off, resp.Header.Get("Content-Range"))
		}
		return resp.Body, 0, nil
	case resp.StatusCode == http.StatusOK:
		return resp.Body, off, nil
	}
	defer resp.Body.Close()
	return nil, 0, fmt.Errorf("fetching blob %s from %s: %w", h, c.repo, checkAnswer(resp, http.StatusOK))
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
	return false, fmt.Errorf("checking blob %s in %s: %w", h, repo, checkAnswer(resp, http.StatusOK))
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
	return fmt.Errorf("mounting blob %s from %s into %s: %w", h, from, c.repo, checkAnswer(resp, http.StatusCreated))
}

// upload sends the blob desc to the repository in one monolithic upload:
// a POST opens the session, one PUT carries the bytes and the digest, which
// the registry checks before it commits. open returns the bytes afresh for
// each attempt; a transient failure is retried.
func (c *repoClient) upload(ctx context.Context, desc v1.Descriptor, open func() (io.Reader, error)) error {
	err := c.retry.doAll(ctx, func() error {
		start := fmt.Sprintf("%s://%s/v2/%s/blobs/uploads/", c.scheme, c.repo.RegistryStr(), c.repo.RepositoryStr())
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, start, nil)
		if err != nil {
			return err
		}
		resp, err := c.client.Do(req)
		if err != nil {
			return err
		}
		err = checkAnswer(resp, http.StatusAccepted) // reads the body: close after
		resp.Body.Close()
		if err != nil {
			return err
		}
		loc, err := resp.Request.URL.Parse(resp.Header.Get("Location"))
		if err != nil || resp.Header.Get("Location") == "" {
			return fmt.Errorf("the registry gave no upload location (%q)", resp.Header.Get("Location"))
		}
		q := loc.Query()
		q.Set("digest", desc.Digest.String())
		loc.RawQuery = q.Encode()
		body, err := open()
		if err != nil {
			return err
		}
		// A PUT that fails is not sent again into the same upload session,
		// which the registry may have dropped: do opens a new one. GetBody
		// still lets an auth challenge re-send it with its bytes.
		put, err := http.NewRequestWithContext(sendOnce(ctx), http.MethodPut, loc.String(), body)
		if err != nil {
			return err
		}
		put.ContentLength = desc.Size
		put.Header.Set("Content-Type", "application/octet-stream")
		put.GetBody = func() (io.ReadCloser, error) {
			r, err := open()
			return io.NopCloser(r), err
		}
		resp, err = c.client.Do(put)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		return checkAnswer(resp, http.StatusCreated)
	})
	if err != nil {
		return fmt.Errorf("uploading blob %s to %s: %w", desc.Digest, c.repo, err)
	}
	return nil
}

// answerError is an error answer of a registry, said in one line: the
// request (without its query), then each error's code and message. go-containerregistry's own
// rendering adds each error's detail as a Go value (map[Tag:v2]); only a
// detail that is text is kept.
type answerError struct{ te *transport.Error }

func (e *answerError) Error() string {
	if len(e.te.Errors) == 0 {
		return e.te.Error()
	}
	var b strings.Builder
	if e.te.Request != nil {
		u := *e.te.Request.URL
		u.RawQuery, u.User = "", nil // queries may carry signatures
		fmt.Fprintf(&b, "%s %s: ", e.te.Request.Method, u.String())
	}
	for k, d := range e.te.Errors {
		if k > 0 {
			b.WriteString("; ")
		}
		fmt.Fprintf(&b, "%s: %s", d.Code, d.Message)
		if detail, ok := d.Detail.(string); ok && detail != "" {
			fmt.Fprintf(&b, " (%s)", detail)
		}
	}
	return b.String()
}

func (e *answerError) Unwrap() error { return e.te }

// answer returns err with a registry's error answer said in one line.
func answer(err error) error {
	if te, ok := err.(*transport.Error); ok {
		return &answerError{te}
	}
	return err
}

// checkAnswer is [transport.CheckError], with the error said as
// [answerError] does.
func checkAnswer(resp *http.Response, codes ...int) error {
	return answer(transport.CheckError(resp, codes...))
}

// connectError says why the first contact with a registry failed. For
// registries on loopback and private addresses, go-containerregistry tries
// HTTPS and plain HTTP at once and reports both; imo allows only one of
// them, so a failure to reach the registry is said for that one alone.
func connectError(host string, plainHTTP bool, err error) error {
	scheme := "HTTPS"
	if plainHTTP {
		scheme = "plain HTTP"
	}
	var retried *retriedError
	var op *net.OpError
	switch {
	case errors.Is(err, errStalled) && errors.As(err, &retried):
		return fmt.Errorf("connecting to registry %s (%s): %w", host, scheme, retried)
	case errors.As(err, &op):
		if errors.As(err, &retried) {
			return fmt.Errorf("connecting to registry %s (%s): %w", host, scheme, retried)
		}
		return fmt.Errorf("connecting to registry %s (%s): %w", host, scheme, op)
	}
	return fmt.Errorf("connecting to registry %s: %w", host, err)
}
