package imo

import (
	"context"
	"fmt"
	"io"
	"sync"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"golang.org/x/sync/errgroup"
)

// PushVet checks, before anything is sent, that the repository of dst holds
// every blob the archive references but leaves out: layers and configs, of
// every platform. It asks the registry about each such blob (one HEAD
// request per blob, in the destination repository itself). If any is
// missing it returns a [*MissingBlobsError] naming all of them, which wraps
// [ErrMissingBlobs].
func (i *Incremental) PushVet(ctx context.Context, archive, dst string) error {
	if i.err != nil {
		return i.err
	}
	defer i.push.closeIdle()
	t, err := i.openTarget(ctx, archive, dst, transport.PullScope)
	if err != nil {
		return err
	}
	defer t.close()
	_, err = i.vet(ctx, t.client, t.archive, t.graph, false)
	return err
}

// pushTarget is an archive's image and the repository it goes to.
type pushTarget struct {
	archive *archiveFile
	file    io.Closer
	graph   *imageGraph
	ref     name.Reference
	client  *repoClient
}

func (t *pushTarget) close() { t.file.Close() }

// openTarget reads the archive and logs in to dst's repository for action
// (pull to vet, push to push).
func (i *Incremental) openTarget(ctx context.Context, archive, dst, action string) (*pushTarget, error) {
	ref, err := i.parseRef(dst, i.opts.plainPush)
	if err != nil {
		return nil, fmt.Errorf("destination: %w", err)
	}
	a, file, err := openArchive(archive)
	if err != nil {
		return nil, err
	}
	g, err := a.image(ctx)
	if err != nil {
		file.Close()
		return nil, err
	}
	c, err := newRepoClient(ctx, ref.Context(), i.push, i.opts.pushAuth, i.opts.keychain, i.opts.retry, i.destScopes(ref.Context(), action))
	if err != nil {
		file.Close()
		return nil, err
	}
	return &pushTarget{archive: a, file: file, graph: g, ref: ref, client: c}, nil
}

// PushVet is [Incremental.PushVet] with the default options.
func PushVet(ctx context.Context, archive, dst string) error {
	return New().PushVet(ctx, archive, dst)
}

// destination is what the destination holds of an archive's blobs.
type destination struct {
	// present are the blobs the destination repository holds.
	present map[v1.Hash]bool
	// mountable are blobs the archive leaves out that the destination
	// repository lacks but a WithMountFrom repository holds.
	mountable map[v1.Hash]name.Repository
}

// vet asks the destination about every blob the archive leaves out, and,
// with all, about the blobs it carries too; left-out blobs the destination
// repository lacks are then looked for in the WithMountFrom repositories.
// It returns a [*MissingBlobsError] if any left-out blob is nowhere.
func (i *Incremental) vet(ctx context.Context, c *repoClient, a *archiveFile, g *imageGraph, all bool) (*destination, error) {
	d := &destination{present: map[v1.Hash]bool{}, mountable: map[v1.Hash]name.Repository{}}
	var mu sync.Mutex
	ask := func(blobs []*blobUse, repo name.Repository, record func(v1.Hash)) error {
		eg, ectx := errgroup.WithContext(ctx)
		eg.SetLimit(i.opts.jobs)
		for _, b := range blobs {
			eg.Go(func() error {
				ok, err := c.blobExists(ectx, repo, b.desc.Digest)
				if err != nil || !ok {
					return err
				}
				mu.Lock()
				defer mu.Unlock()
				record(b.desc.Digest)
				return nil
			})
		}
		return eg.Wait()
	}
	var asked []*blobUse
	for _, b := range g.blobs {
		if (all || !a.has(b.desc.Digest)) && !b.foreign() {
			asked = append(asked, b)
		}
	}
	if err := ask(asked, c.repo, func(h v1.Hash) { d.present[h] = true }); err != nil {
		return nil, err
	}
	missing := func() []*blobUse {
		var out []*blobUse
		for _, b := range g.blobs {
			if !a.has(b.desc.Digest) && !b.foreign() && !d.present[b.desc.Digest] && d.mountable[b.desc.Digest] == (name.Repository{}) {
				out = append(out, b)
			}
		}
		return out
	}
	for _, from := range i.mountFromRepos(c.repo) {
		err := ask(missing(), from, func(h v1.Hash) {
			if d.mountable[h] == (name.Repository{}) {
				d.mountable[h] = from
			}
		})
		if err != nil {
			return nil, err
		}
	}
	if m := missing(); len(m) > 0 {
		e := &MissingBlobsError{Repository: c.repo.String()}
		for _, b := range m {
			e.Blobs = append(e.Blobs, MissingBlob{Digest: b.desc.Digest, Size: b.desc.Size, MediaType: b.desc.MediaType, NeededBy: b.neededBy})
		}
		return nil, e
	}
	return d, nil
}

// parseRef parses an image reference, marking it for plain HTTP when asked.
func (i *Incremental) parseRef(s string, plainHTTP bool) (name.Reference, error) {
	var opts []name.Option
	if plainHTTP {
		opts = append(opts, name.Insecure)
	}
	ref, err := name.ParseReference(s, opts...)
	if err != nil {
		return nil, fmt.Errorf("parsing reference %q: %w", s, err)
	}
	return ref, nil
}

// destScopes are the token scopes for the destination repository with the
// given action, and pull on every WithMountFrom repository.
func (i *Incremental) destScopes(repo name.Repository, action string) []string {
	scopes := []string{repo.Scope(action)}
	for _, from := range i.mountFromRepos(repo) {
		scopes = append(scopes, from.Scope(transport.PullScope))
	}
	return scopes
}

// mountFromRepos are the WithMountFrom repositories, in the destination's registry.
func (i *Incremental) mountFromRepos(dst name.Repository) []name.Repository {
	var out []name.Repository
	for _, r := range i.opts.mountFrom {
		out = append(out, dst.Registry.Repo(r))
	}
	return out
}
