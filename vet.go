package imo

import (
	"context"
	"fmt"
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
	a, closer, err := openArchive(archive)
	if err != nil {
		return err
	}
	defer closer.Close()
	g, err := a.image(ctx)
	if err != nil {
		return err
	}
	ref, err := i.parseRef(dst, i.opts.plainPush)
	if err != nil {
		return fmt.Errorf("destination: %w", err)
	}
	c, err := newRepoClient(ctx, ref.Context(), i.push, i.opts.pushAuth, i.opts.keychain, []string{ref.Context().Scope(transport.PullScope)})
	if err != nil {
		return err
	}
	_, err = i.vet(ctx, c, a, g, false)
	return err
}

// PushVet is [Incremental.PushVet] with the default options.
func PushVet(ctx context.Context, archive, dst string) error {
	return New().PushVet(ctx, archive, dst)
}

// vet asks the destination about every blob the archive leaves out, and,
// with all, about the blobs it carries too. It returns the blobs the
// destination holds, or a [*MissingBlobsError] if any left-out blob is
// missing.
func (i *Incremental) vet(ctx context.Context, c *repoClient, a *archiveFile, g *imageGraph, all bool) (map[v1.Hash]bool, error) {
	var mu sync.Mutex
	present := map[v1.Hash]bool{}
	eg, ectx := errgroup.WithContext(ctx)
	eg.SetLimit(i.opts.jobs)
	for _, b := range g.blobs {
		if !all && a.has(b.desc.Digest) {
			continue
		}
		eg.Go(func() error {
			ok, err := c.blobExists(ectx, b.desc.Digest)
			if err != nil {
				return err
			}
			mu.Lock()
			defer mu.Unlock()
			present[b.desc.Digest] = ok
			return nil
		})
	}
	if err := eg.Wait(); err != nil {
		return nil, err
	}
	missing := &MissingBlobsError{Repository: c.repo.String()}
	for _, b := range g.blobs {
		if !a.has(b.desc.Digest) && !present[b.desc.Digest] {
			missing.Blobs = append(missing.Blobs, MissingBlob{Digest: b.desc.Digest, Size: b.desc.Size, MediaType: b.desc.MediaType, NeededBy: b.neededBy})
		}
	}
	if len(missing.Blobs) > 0 {
		return nil, missing
	}
	return present, nil
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
