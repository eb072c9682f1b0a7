package imo

import (
	"context"
	"fmt"
	"io"
	"os"
	"sync"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
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
//
// For an archive of several images, dst is a target, as [Incremental.PushVet]
// describes. Each image is pushed all or nothing: one that fails to vet or
// whose blobs do not all arrive gets no manifest, while the others are
// pushed. A blob several images share is uploaded once and mounted into the
// other repositories that need it.
func (i *Incremental) Push(ctx context.Context, archive, dst string) error {
	_, err := i.PushArchive(ctx, archive, dst)
	return err
}

// PushArchive is [Incremental.Push], returning what became of each image.
// The error is nil when every image was pushed; otherwise it joins each
// failed image's error.
func (i *Incremental) PushArchive(ctx context.Context, archive, dst string) ([]ImageResult, error) {
	return i.pushArchive(ctx, archive, archive, dst)
}

// pushArchive pushes the archive at path, called in errors.
func (i *Incremental) pushArchive(ctx context.Context, path, called, dst string) ([]ImageResult, error) {
	if i.err != nil {
		return nil, i.err
	}
	defer i.push.closeIdle()
	j, err := i.openJob(ctx, path, called, dst, transport.PushScope)
	if err != nil {
		return nil, err
	}
	defer j.close()
	i.vetAll(ctx, j, true)
	if len(j.archive.deltas) > 0 {
		if j.rebuilder, err = newRebuilder(i, j.archive); err != nil {
			return nil, err
		}
		defer j.rebuilder.close()
	}
	i.sendBlobs(ctx, j)
	// Images first, then the artifacts that refer to them.
	for _, artifacts := range []bool{false, true} {
		eg, ectx := errgroup.WithContext(ctx)
		eg.SetLimit(i.opts.jobs)
		for _, img := range j.images {
			switch {
			case (img.subject != nil) != artifacts || img.err != nil:
			case img.subject != nil && img.subject.err != nil:
				img.err = fmt.Errorf("%s: not pushed: the image it refers to, %s, failed", img.ref, img.subject.ref)
			default:
				eg.Go(func() error {
					img.err = i.putImage(ectx, img)
					return nil
				})
			}
		}
		eg.Wait()
	}
	out, err := j.results()
	if cerr := ctx.Err(); cerr != nil {
		return out, cerr
	}
	return out, err
}

// putImage writes an image's manifests, the children first, and checks
// that its destination then resolves to its digest.
func (i *Incremental) putImage(ctx context.Context, img *destImage) error {
	c, g := img.client, img.graph
	for n := len(g.manifests) - 1; n >= 1; n-- {
		m := g.manifests[n]
		if err := i.putManifest(ctx, c, c.repo.Digest(m.desc.Digest.String()), m); err != nil {
			return err
		}
	}
	top := g.top()
	if err := i.putManifest(ctx, c, img.ref, top); err != nil {
		return err
	}
	got, err := remote.Head(img.ref, c.options(ctx)...)
	if err != nil {
		err = answer(err)
		return fmt.Errorf("checking %s after push: %w", img.ref, err)
	}
	if got.Digest != top.desc.Digest {
		return fmt.Errorf("%s resolves to %s after push, want %s", img.ref, got.Digest, top.desc.Digest)
	}
	return nil
}

// PushStream is [Incremental.PushArchive] for an archive read from r, such
// as standard input. It spools the archive into a temporary file in the
// [WithTempDir] directory, which it removes before returning.
func (i *Incremental) PushStream(ctx context.Context, r io.Reader, dst string) ([]ImageResult, error) {
	if i.err != nil {
		return nil, i.err
	}
	f, err := os.CreateTemp(i.opts.tempDir, "imo-push-*.tar")
	if err != nil {
		return nil, fmt.Errorf("spooling archive: %w", err)
	}
	defer os.Remove(f.Name())
	_, err = io.Copy(f, contextReader{ctx: ctx, r: r})
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return nil, fmt.Errorf("spooling archive to %s: %w", f.Name(), err)
	}
	return i.pushArchive(ctx, f.Name(), streamName, dst)
}

// streamName names an archive read from a stream in errors.
const streamName = "the archive stream"

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

// blobTarget is a repository a blob must reach, and the images there
// that need it.
type blobTarget struct {
	client *repoClient
	from   name.Repository // a WithMountFrom repository holding it, if any
	images []*destImage
}

// sendBlobs brings every blob an image that passed vet needs into its
// repository: a blob the archive carries is uploaded once, into the first
// repository that lacks it, and mounted into the others; a left-out blob
// found in a WithMountFrom repository is mounted. An image a blob fails to
// reach fails with it; the other images go on.
func (i *Incremental) sendBlobs(ctx context.Context, j *pushJob) {
	var order []v1.Hash
	descs := map[v1.Hash]v1.Descriptor{}
	targets := map[v1.Hash][]*blobTarget{}
	for _, img := range j.images {
		if img.err != nil {
			continue
		}
		for _, b := range img.graph.blobs {
			h := b.desc.Digest
			ev := Event{Ref: img.ref.Context().String(), Digest: h, MediaType: b.desc.MediaType, Size: b.desc.Size, Kind: BlobSkipped}
			from, mountable := img.dest.mountable[h]
			switch {
			case img.dest.present[h]:
				ev.Reason = "destination has it"
				i.opts.reporter.Report(ev)
				continue
			case b.foreign() && !j.archive.has(h):
				ev.Reason = reasonForeign
				i.opts.reporter.Report(ev)
				continue
			case !mountable && !j.archive.has(h) && img.dest.rebuild[h] == nil:
				continue // vet found it missing; the image has failed
			}
			if _, ok := targets[h]; !ok {
				order = append(order, h)
				descs[h] = b.desc
			}
			var t *blobTarget
			for _, have := range targets[h] {
				if have.client == img.client {
					t = have
				}
			}
			if t == nil {
				t = &blobTarget{client: img.client, from: from}
				targets[h] = append(targets[h], t)
			}
			t.images = append(t.images, img)
		}
	}
	var total int64
	for _, h := range order {
		if targets[h][0].from == (name.Repository{}) {
			total += descs[h].Size // uploaded once; mounted elsewhere
		}
	}
	i.opts.reporter.Report(Event{Kind: TransferPlanned, Size: total})
	var mu sync.Mutex
	fail := func(t *blobTarget, err error) {
		mu.Lock()
		defer mu.Unlock()
		for _, img := range t.images {
			if img.err == nil {
				img.err = fmt.Errorf("%s: %w", img.ref, err)
			}
		}
	}
	eg, ectx := errgroup.WithContext(ctx)
	eg.SetLimit(i.opts.jobs)
	for _, h := range order {
		eg.Go(func() error {
			desc := descs[h]
			var uploaded *repoClient
			var rebuilt string // the blob rebuilt from its delta, kept until every target has it
			defer func() {
				if rebuilt != "" {
					os.Remove(rebuilt)
				}
			}()
			send := func(t *blobTarget) error {
				if j.archive.has(h) {
					return i.uploadBlob(ectx, t.client, j.archive.blob, desc)
				}
				if rebuilt == "" {
					path, err := i.rebuildBlob(ectx, j, t, desc)
					if err != nil {
						return err
					}
					rebuilt = path
				}
				return i.uploadFile(ectx, t.client, rebuilt, desc)
			}
			for _, t := range targets[h] {
				var err error
				switch {
				case t.from != (name.Repository{}):
					err = i.mountBlob(ectx, t.client, desc, t.from)
				case uploaded != nil:
					// A registry without cross-repository mounts gets the
					// bytes again.
					if err = i.mountBlob(ectx, t.client, desc, uploaded.repo); err != nil {
						err = send(t)
					}
				default:
					if err = send(t); err == nil {
						uploaded = t.client
					}
				}
				if err != nil {
					fail(t, err)
				}
			}
			return nil
		})
	}
	eg.Wait()
}

// mountBlob mounts desc from the repository from into c's repository.
func (i *Incremental) mountBlob(ctx context.Context, c *repoClient, desc v1.Descriptor, from name.Repository) error {
	if err := c.mount(ctx, desc.Digest, from); err != nil {
		return err
	}
	i.opts.reporter.Report(Event{Kind: BlobSkipped, Ref: c.repo.String(), Digest: desc.Digest, MediaType: desc.MediaType, Size: desc.Size, Reason: "mounted from " + from.RepositoryStr()})
	return nil
}

// rebuildBlob rebuilds desc from its sub-layer delta into a temporary
// file, verified, and returns its path; the caller removes it.
func (i *Incremental) rebuildBlob(ctx context.Context, j *pushJob, t *blobTarget, desc v1.Descriptor) (string, error) {
	path, spooled, err := j.rebuilder.rebuild(ctx, t.client, desc, t.images[0].dest)
	if err != nil {
		return "", err
	}
	i.opts.reporter.Report(Event{Kind: BlobRebuilt, Ref: t.client.repo.String(), Digest: desc.Digest, MediaType: desc.MediaType, Size: desc.Size,
		Reason: fmt.Sprintf("from its sub-layer delta, with %d bytes of base layer contents spooled to disk", spooled)})
	return path, nil
}

// uploadFile uploads desc from the file at path into c's repository.
func (i *Incremental) uploadFile(ctx context.Context, c *repoClient, path string, desc v1.Descriptor) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("uploading %s: %w", desc.Digest, err)
	}
	defer f.Close()
	return i.uploadBlob(ctx, c, func(d v1.Descriptor, report func(int64)) (io.Reader, error) {
		return newVerifyingReader(io.NewSectionReader(f, 0, d.Size), d, path, report)
	}, desc)
}

// uploadBlob uploads desc, read from open, into c's repository.
func (i *Incremental) uploadBlob(ctx context.Context, c *repoClient, open func(v1.Descriptor, func(int64)) (io.Reader, error), desc v1.Descriptor) error {
	ev := Event{Kind: BlobStarted, Ref: c.repo.String(), Digest: desc.Digest, MediaType: desc.MediaType, Size: desc.Size}
	i.opts.reporter.Report(ev)
	err := c.upload(ctx, desc, func() (io.Reader, error) {
		return open(desc, func(n int64) {
			p := ev
			p.Kind, p.Complete = BlobProgress, n
			i.opts.reporter.Report(p)
		})
	})
	if err != nil {
		return err
	}
	ev.Kind, ev.Complete = BlobDone, desc.Size
	i.opts.reporter.Report(ev)
	return nil
}

func (i *Incremental) putManifest(ctx context.Context, c *repoClient, ref name.Reference, m manifestNode) error {
	if err := remote.Put(ref, rawManifest(m), c.options(ctx)...); err != nil {
		return fmt.Errorf("pushing manifest %s to %s: %w", m.desc.Digest, ref, answer(err))
	}
	i.opts.reporter.Report(Event{Kind: ManifestPushed, Ref: ref.String(), Digest: m.desc.Digest, MediaType: m.desc.MediaType, Size: m.desc.Size})
	return nil
}

// rawManifest pushes a manifest's exact bytes under its own media type.
type rawManifest manifestNode

func (m rawManifest) RawManifest() ([]byte, error)        { return m.raw, nil }
func (m rawManifest) MediaType() (types.MediaType, error) { return m.desc.MediaType, nil }
