package imo

import (
	"context"
	"fmt"
	"io"
	"os"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"golang.org/x/sync/errgroup"
)

// Push makes dst hold exactly the archive's final image, digest for digest.
//
// It first vets as [Incremental.PushVet] does and refuses, before uploading
// anything, if the destination lacks a blob the archive leaves out. It then
// uploads the blobs the archive carries and the destination lacks (blobs it
// already has are never sent again), up to [WithJobs] at once, each checked
// against its digest as it is read; then the child manifests, then the
// index or image manifest under dst's tag. No manifest is written until every
// blob it needs is in place. Finally it checks that dst resolves to the
// archive's digest. dst may name a digest instead of a tag, which must then
// be the archive's.
func (i *Incremental) Push(ctx context.Context, archive, dst string) error {
	_, err := i.PushArchive(ctx, archive, dst)
	return err
}

// PushArchive is [Incremental.Push], returning the reference by digest
// that dst now resolves to.
func (i *Incremental) PushArchive(ctx context.Context, archive, dst string) (name.Digest, error) {
	if i.err != nil {
		return name.Digest{}, i.err
	}
	defer i.push.closeIdle()
	t, err := i.openTarget(ctx, archive, dst, transport.PushScope)
	if err != nil {
		return name.Digest{}, err
	}
	defer t.close()
	a, g, ref, c := t.archive, t.graph, t.ref, t.client
	top := g.top()
	pushed := ref.Context().Digest(top.desc.Digest.String())
	if d, ok := ref.(name.Digest); ok && d.DigestStr() != top.desc.Digest.String() {
		return name.Digest{}, fmt.Errorf("destination %s names a digest, but the archive holds %s", dst, top.desc.Digest)
	}
	dest, err := i.vet(ctx, c, a, g, true)
	if err != nil {
		return name.Digest{}, err
	}
	if err := i.uploadBlobs(ctx, c, a, g, dest); err != nil {
		return name.Digest{}, err
	}
	for j := len(g.manifests) - 1; j >= 1; j-- {
		m := g.manifests[j]
		if err := i.putManifest(ctx, c, c.repo.Digest(m.desc.Digest.String()), m); err != nil {
			return name.Digest{}, err
		}
	}
	if err := i.putManifest(ctx, c, ref, top); err != nil {
		return name.Digest{}, err
	}
	got, err := remote.Head(ref, c.options(ctx)...)
	if err != nil {
		return name.Digest{}, fmt.Errorf("checking %s after push: %w", ref, err)
	}
	if got.Digest != top.desc.Digest {
		return name.Digest{}, fmt.Errorf("%s resolves to %s after push, want %s", ref, got.Digest, top.desc.Digest)
	}
	return pushed, nil
}

// PushStream is [Incremental.PushArchive] for an archive read from r, such
// as standard input. It spools the archive into a temporary file in the
// [WithTempDir] directory, which it removes before returning.
func (i *Incremental) PushStream(ctx context.Context, r io.Reader, dst string) (name.Digest, error) {
	if i.err != nil {
		return name.Digest{}, i.err
	}
	f, err := os.CreateTemp(i.opts.tempDir, "imo-push-*.tar")
	if err != nil {
		return name.Digest{}, fmt.Errorf("spooling archive: %w", err)
	}
	defer os.Remove(f.Name())
	_, err = io.Copy(f, contextReader{ctx: ctx, r: r})
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return name.Digest{}, fmt.Errorf("spooling archive to %s: %w", f.Name(), err)
	}
	return i.PushArchive(ctx, f.Name(), dst)
}

// contextReader stops reading once ctx is done.
type contextReader struct {
	ctx context.Context
	r   io.Reader
}

func (c contextReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

// uploadBlobs sends every blob the archive carries that the destination
// lacks, and mounts the mountable ones.
func (i *Incremental) uploadBlobs(ctx context.Context, c *repoClient, a *archiveFile, g *imageGraph, dest *destination) error {
	eg, ectx := errgroup.WithContext(ctx)
	eg.SetLimit(i.opts.jobs)
	for _, b := range g.blobs {
		ev := Event{Ref: c.repo.String(), Digest: b.desc.Digest, MediaType: b.desc.MediaType, Size: b.desc.Size}
		if dest.present[b.desc.Digest] {
			ev.Kind, ev.Reason = BlobSkipped, "destination has it"
			i.opts.reporter.Report(ev)
			continue
		}
		if b.foreign() && !a.has(b.desc.Digest) {
			ev.Kind, ev.Reason = BlobSkipped, reasonForeign
			i.opts.reporter.Report(ev)
			continue
		}
		if from, ok := dest.mountable[b.desc.Digest]; ok {
			eg.Go(func() error {
				if err := c.mount(ectx, b.desc.Digest, from); err != nil {
					return err
				}
				ev.Kind, ev.Reason = BlobSkipped, "mounted from "+from.RepositoryStr()
				i.opts.reporter.Report(ev)
				return nil
			})
			continue
		}
		eg.Go(func() error {
			ev.Kind = BlobStarted
			i.opts.reporter.Report(ev)
			err := c.upload(ectx, b.desc, func() (io.Reader, error) {
				return a.blob(b.desc, func(n int64) {
					p := ev
					p.Kind, p.Complete = BlobProgress, n
					i.opts.reporter.Report(p)
				})
			})
			if err != nil {
				return err
			}
			ev.Kind, ev.Complete = BlobDone, b.desc.Size
			i.opts.reporter.Report(ev)
			return nil
		})
	}
	return eg.Wait()
}

func (i *Incremental) putManifest(ctx context.Context, c *repoClient, ref name.Reference, m manifestNode) error {
	if err := remote.Put(ref, rawManifest(m), c.options(ctx)...); err != nil {
		return fmt.Errorf("pushing manifest %s to %s: %w", m.desc.Digest, ref, err)
	}
	i.opts.reporter.Report(Event{Kind: ManifestPushed, Ref: ref.String(), Digest: m.desc.Digest, MediaType: m.desc.MediaType, Size: m.desc.Size})
	return nil
}

// rawManifest pushes a manifest's exact bytes under its own media type.
type rawManifest manifestNode

func (m rawManifest) RawManifest() ([]byte, error)        { return m.raw, nil }
func (m rawManifest) MediaType() (types.MediaType, error) { return m.desc.MediaType, nil }
