package registry

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/imokit/imo/internal/graph"
	"github.com/imokit/imo/internal/verify"
)

// Repository talks to one repository through one authenticated transport,
// so that the registry is pinged and a token fetched once per operation.
type Repository struct {
	repo   name.Repository
	rt     http.RoundTripper
	client *http.Client
	scheme string
	policy Policy
}

// Name is the repository.
func (r *Repository) Name() name.Repository { return r.repo }

// In is another repository of the same registry, reached through the same
// login: a registry that wants another token for it challenges, and the
// token is fetched then.
func (r *Repository) In(repo name.Repository) *Repository {
	out := *r
	out.repo = repo
	return &out
}

func (r *Repository) options(ctx context.Context) []remote.Option {
	return []remote.Option{remote.WithTransport(r.rt), remote.WithContext(ctx)}
}

// Get fetches the manifest ref names, keeping its exact bytes. A transient
// failure, the body cut short included, is retried.
func (r *Repository) Get(ctx context.Context, ref name.Reference) (graph.Node, error) {
	var d *remote.Descriptor
	err := r.policy.do(ctx, func() error {
		var err error
		d, err = remote.Get(ref, r.options(ctx)...)
		return answer(err)
	})
	if err != nil {
		return graph.Node{}, fmt.Errorf("fetching manifest %s: %w", ref, err)
	}
	return graph.Node{Desc: v1.Descriptor{MediaType: d.MediaType, Digest: d.Digest, Size: d.Size}, Raw: d.Manifest}, nil
}

// GetIfExists is Get, returning nil when the registry has no such manifest.
func (r *Repository) GetIfExists(ctx context.Context, ref name.Reference) (*graph.Node, error) {
	n, err := r.Get(ctx, ref)
	if Status(err) == http.StatusNotFound {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return &n, nil
}

// Head fetches the descriptor of the manifest ref names.
func (r *Repository) Head(ctx context.Context, ref name.Reference) (*v1.Descriptor, error) {
	var d *v1.Descriptor
	err := r.policy.do(ctx, func() error {
		var err error
		d, err = remote.Head(ref, r.options(ctx)...)
		return answer(err)
	})
	return d, err
}

// Put writes the manifest m, its exact bytes under its own media type, to
// ref (a tag, or m's digest).
func (r *Repository) Put(ctx context.Context, ref name.Reference, m graph.Node) error {
	if err := remote.Put(ref, rawManifest(m), r.options(ctx)...); err != nil {
		return fmt.Errorf("pushing manifest %s to %s: %w", m.Desc.Digest, ref, answer(err))
	}
	return nil
}

// rawManifest pushes a manifest's exact bytes under its own media type.
type rawManifest graph.Node

func (m rawManifest) RawManifest() ([]byte, error)        { return m.Raw, nil }
func (m rawManifest) MediaType() (types.MediaType, error) { return m.Desc.MediaType, nil }

// Referrers lists the manifests that refer to subject, through the
// referrers API or, on registries without it, its tag fallback.
func (r *Repository) Referrers(ctx context.Context, subject v1.Hash) ([]v1.Descriptor, error) {
	idx, err := remote.Referrers(r.repo.Digest(subject.String()), r.options(ctx)...)
	if err != nil {
		return nil, fmt.Errorf("listing the referrers of %s@%s: %w", r.repo, subject, answer(err))
	}
	im, err := idx.IndexManifest()
	if err != nil {
		return nil, fmt.Errorf("listing the referrers of %s@%s: %w", r.repo, subject, err)
	}
	return im.Manifests, nil
}

// Tags lists the repository's tags, following every page.
func (r *Repository) Tags(ctx context.Context) ([]string, error) {
	return listAll(ctx, r.client, r.policy, r.scheme, r.repo.RegistryStr(), "/v2/"+r.repo.RepositoryStr()+"/tags/list", "tags")
}

// manifestMediaTypes are the manifests imo asks registries for.
var manifestMediaTypes = strings.Join([]string{
	string(types.OCIImageIndex), string(types.OCIManifestSchema1),
	string(types.DockerManifestList), string(types.DockerManifestSchema2),
}, ",")

// Manifest fetches the manifest desc names from the repository, by digest,
// and checks it against desc.
func (r *Repository) Manifest(ctx context.Context, desc v1.Descriptor) ([]byte, error) {
	if desc.Size > graph.MaxManifestSize {
		return nil, fmt.Errorf("%w: manifest %s in %s declares %d bytes, more than the %d allowed", graph.ErrInvalidManifest, desc.Digest, r.repo, desc.Size, graph.MaxManifestSize)
	}
	var raw []byte
	err := r.policy.do(ctx, func() error {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("%s://%s/v2/%s/manifests/%s", r.scheme, r.repo.RegistryStr(), r.repo.RepositoryStr(), desc.Digest), nil)
		if err != nil {
			return err
		}
		req.Header.Set("Accept", manifestMediaTypes)
		resp, err := r.client.Do(req)
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
		return nil, fmt.Errorf("fetching manifest %s from %s: %w", desc.Digest, r.repo, err)
	}
	if err := verify.Bytes(raw, desc, r.repo.String()); err != nil {
		return nil, err
	}
	return raw, nil
}

func (r *Repository) blobURL(repo name.Repository, h v1.Hash) string {
	return fmt.Sprintf("%s://%s/v2/%s/blobs/%s", r.scheme, repo.RegistryStr(), repo.RepositoryStr(), h)
}

// Blob streams the blob desc names. Reading the result fails with a
// [*verify.MismatchError] if the bytes do not match desc; a connection lost
// part-way, or silent for the stall timeout, is resumed.
func (r *Repository) Blob(ctx context.Context, desc v1.Descriptor, report func(int64)) (io.ReadCloser, error) {
	rb, err := openResumingBody(ctx, r, desc, 0)
	if err != nil {
		return nil, err
	}
	vr, err := verify.NewReader(rb, desc, r.repo.String(), report)
	if err != nil {
		rb.Close()
		return nil, err
	}
	return struct {
		io.Reader
		io.Closer
	}{vr, rb}, nil
}

// BlobFrom streams the bytes of the blob desc names from byte off to its
// end, resuming a connection lost part-way as Blob does. The bytes are not
// verified: the caller checks them, with the ones before off. report, when
// not nil, is told the running byte count, off included.
func (r *Repository) BlobFrom(ctx context.Context, desc v1.Descriptor, off int64, report func(int64)) (io.ReadCloser, error) {
	rb, err := openResumingBody(ctx, r, desc, off)
	if err != nil {
		return nil, err
	}
	return struct {
		io.Reader
		io.Closer
	}{verify.Progress(rb, off, report), rb}, nil
}

// ErrRangeIgnored means a registry answered a request for a range of a
// blob with something else: the whole blob (it ignores Range), or another
// range. The caller fetches the blob in one request instead.
var ErrRangeIgnored = errors.New("the registry did not serve the range asked for")

// BlobRange streams bytes off to end (excluded) of the blob desc names,
// resuming a connection lost part-way within the range as Blob does. The
// bytes are not verified: the caller checks the whole blob. A registry
// that does not answer with exactly that range fails it with
// [ErrRangeIgnored], having sent no more than the answer's first bytes.
// report, when not nil, is told the running count of the range's bytes.
func (r *Repository) BlobRange(ctx context.Context, desc v1.Descriptor, off, end int64, report func(int64)) (io.ReadCloser, error) {
	if off < 0 || end > desc.Size || off >= end {
		return nil, fmt.Errorf("blob %s of %s: no range %d-%d in its %d bytes", desc.Digest, r.repo, off, end, desc.Size)
	}
	rb := &resumingBody{ctx: ctx, c: r, desc: desc, off: off, end: end, ranged: true}
	if err := rb.open(); err != nil {
		return nil, err
	}
	return struct {
		io.Reader
		io.Closer
	}{verify.Progress(rb, 0, report), rb}, nil
}

// openRange starts fetching bytes off to end (excluded) of desc, which the
// registry must answer with exactly that range.
func (r *Repository) openRange(ctx context.Context, desc v1.Descriptor, off, end int64) (io.ReadCloser, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, r.blobURL(r.repo, desc.Digest), nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Range", fmt.Sprintf("bytes=%d-%d", off, end-1))
	resp, err := r.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("fetching blob %s from %s: %w", desc.Digest, r.repo, err)
	}
	if resp.StatusCode == http.StatusPartialContent {
		var start, last, size int64
		_, serr := fmt.Sscanf(resp.Header.Get("Content-Range"), "bytes %d-%d/%d", &start, &last, &size)
		if serr == nil && start == off && last == end-1 && size == desc.Size && (resp.ContentLength < 0 || resp.ContentLength == end-off) {
			return resp.Body, nil
		}
		resp.Body.Close()
		return nil, fmt.Errorf("fetching bytes %d to %d of blob %s from %s: %w: got %q", off, end, desc.Digest, r.repo, ErrRangeIgnored, resp.Header.Get("Content-Range"))
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusOK {
		return nil, fmt.Errorf("fetching bytes %d to %d of blob %s from %s: %w: it sent the whole blob", off, end, desc.Digest, r.repo, ErrRangeIgnored)
	}
	return nil, fmt.Errorf("fetching blob %s from %s: %w", desc.Digest, r.repo, checkAnswer(resp, http.StatusPartialContent))
}

// openBlob starts fetching the blob h from byte off on. A registry that
// ignores Range answers with the whole blob; skip is then how many bytes
// the caller must discard first.
func (r *Repository) openBlob(ctx context.Context, h v1.Hash, off, size int64) (body io.ReadCloser, skip int64, err error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, r.blobURL(r.repo, h), nil)
	if err != nil {
		return nil, 0, err
	}
	if off > 0 {
		req.Header.Set("Range", fmt.Sprintf("bytes=%d-%d", off, size-1))
	}
	resp, err := r.client.Do(req)
	if err != nil {
		return nil, 0, fmt.Errorf("fetching blob %s from %s: %w", h, r.repo, err)
	}
	switch {
	case off > 0 && resp.StatusCode == http.StatusPartialContent:
		var start int64
		if _, err := fmt.Sscanf(resp.Header.Get("Content-Range"), "bytes %d-", &start); err != nil || start != off {
			resp.Body.Close()
			return nil, 0, fmt.Errorf("fetching blob %s from %s: asked for byte %d on, got range %q", h, r.repo, off, resp.Header.Get("Content-Range"))
		}
		return resp.Body, 0, nil
	case resp.StatusCode == http.StatusOK:
		return resp.Body, off, nil
	}
	defer resp.Body.Close()
	return nil, 0, fmt.Errorf("fetching blob %s from %s: %w", h, r.repo, checkAnswer(resp, http.StatusOK))
}

// Exists asks the repository whether it holds the blob h.
func (r *Repository) Exists(ctx context.Context, h v1.Hash) (bool, error) {
	repo := r.repo
	req, err := http.NewRequestWithContext(ctx, http.MethodHead, r.blobURL(repo, h), nil)
	if err != nil {
		return false, err
	}
	resp, err := r.client.Do(req)
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

// Mount links the blob h from the repository from into the client's
// repository without sending its bytes (a cross-repository blob mount).
func (r *Repository) Mount(ctx context.Context, h v1.Hash, from name.Repository) error {
	u := fmt.Sprintf("%s://%s/v2/%s/blobs/uploads/?mount=%s&from=%s", r.scheme, r.repo.RegistryStr(), r.repo.RepositoryStr(), h, from.RepositoryStr())
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, nil)
	if err != nil {
		return err
	}
	resp, err := r.client.Do(req)
	if err != nil {
		return fmt.Errorf("mounting blob %s from %s into %s: %w", h, from, r.repo, err)
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
					if resp, err := r.client.Do(del); err == nil {
						resp.Body.Close()
					}
				}
			}
		}
		return fmt.Errorf("mounting blob %s from %s into %s: the registry does not support cross-repository mounts", h, from, r.repo)
	}
	return fmt.Errorf("mounting blob %s from %s into %s: %w", h, from, r.repo, checkAnswer(resp, http.StatusCreated))
}

// Upload sends the blob desc to the repository in one monolithic upload:
// a POST opens the session, one PUT carries the bytes and the digest, which
// the registry checks before it commits. open returns the bytes afresh for
// each attempt; a transient failure is retried.
func (r *Repository) Upload(ctx context.Context, desc v1.Descriptor, open func() (io.Reader, error)) error {
	err := r.policy.doAll(ctx, func() error {
		start := fmt.Sprintf("%s://%s/v2/%s/blobs/uploads/", r.scheme, r.repo.RegistryStr(), r.repo.RepositoryStr())
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, start, nil)
		if err != nil {
			return err
		}
		resp, err := r.client.Do(req)
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
		resp, err = r.client.Do(put)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		return checkAnswer(resp, http.StatusCreated)
	})
	if err != nil {
		return fmt.Errorf("uploading blob %s to %s: %w", desc.Digest, r.repo, err)
	}
	return nil
}
