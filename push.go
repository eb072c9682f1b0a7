package imo

import (
	"context"
	"fmt"
	"io"
	"os"
	"sync"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/imokit/imo/archive"
	"github.com/imokit/imo/internal/graph"
	"github.com/imokit/imo/internal/registry"
	"github.com/imokit/imo/internal/verify"
	"golang.org/x/sync/errgroup"
)

// Push makes dst hold exactly the final image of the archive at path,
// digest for digest.
//
// It first vets as [Incremental.PushVet] does and refuses, before uploading
// anything, if the destination lacks a blob the archive leaves out. It then
// uploads the blobs the archive carries and the destination lacks (blobs it
// already has are never sent again), up to [WithJobs] at once, each checked
// against its digest as it is read; then the child manifests, then the
// index or image manifest under dst's tag. No manifest is written until every
// blob it needs is in place. Finally it checks that dst resolves to the
// archive's digest. dst is written as [Incremental.PushVet] describes.
//
// For an archive of several images, dst is a target. Each image is pushed
// all or nothing: one that fails to vet or whose blobs do not all arrive
// gets no manifest, while the others are pushed. A blob several images
// share is uploaded once and mounted into the other repositories that need
// it.
func (i *Incremental) Push(ctx context.Context, path, dst string) error {
	return i.onArchive(ctx, path, dst, i.PushArchive)
}

// PushArchive is [Incremental.Push] for an opened archive, returning what
// became of each image. The error is nil when every image was pushed;
// otherwise it joins each failed image's error.
func (i *Incremental) PushArchive(ctx context.Context, a *archive.Reader, dst string) ([]ImageResult, error) {
	if i.err != nil {
		return nil, i.err
	}
	defer i.closeIdle()
	if err := i.verify(ctx, a); err != nil {
		return nil, err
	}
	if isLayoutDest(dst) {
		lj, err := i.openLayoutJob(ctx, a, dst)
		if err != nil {
			return nil, err
		}
		return lj.push(ctx, i.opts.jobs)
	}
	j, err := i.openJob(ctx, a, dst, transport.PushScope)
	if err != nil {
		return nil, err
	}
	j.vetAll(ctx, true)
	if len(a.Deltas()) > 0 {
		if j.rebuilder, err = newRebuilder(i.opts.tempDir, a); err != nil {
			return nil, err
		}
		defer j.rebuilder.close()
	}
	j.sendBlobs(ctx)
	// Images first, then the artifacts that refer to them.
	for _, artifacts := range []bool{false, true} {
		eg, ectx := errgroup.WithContext(ctx)
		eg.SetLimit(j.jobs)
		for _, img := range j.images {
			switch {
			case (img.subject != nil) != artifacts || img.err != nil:
			case img.subject != nil && img.subject.err != nil:
				img.err = fmt.Errorf("%s: not pushed: the image it refers to, %s, failed", img.ref, img.subject.ref)
			default:
				eg.Go(func() error {
					img.err = j.putImage(ectx, img)
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
func (j *pushJob) putImage(ctx context.Context, img *destImage) error {
	g := img.graph
	for n := len(g.Manifests) - 1; n >= 1; n-- {
		m := g.Manifests[n]
		if err := j.putManifest(ctx, img.repo, img.repo.Name().Digest(m.Desc.Digest.String()), m); err != nil {
			return err
		}
	}
	top := g.Top()
	if err := j.putManifest(ctx, img.repo, img.ref, top); err != nil {
		return err
	}
	got, err := img.repo.Head(ctx, img.ref)
	if err != nil {
		return fmt.Errorf("checking %s after push: %w", img.ref, err)
	}
	if got.Digest != top.Desc.Digest {
		return fmt.Errorf("%s resolves to %s after push, want %s", img.ref, got.Digest, top.Desc.Digest)
	}
	return nil
}

func (j *pushJob) putManifest(ctx context.Context, repo *registry.Repository, ref name.Reference, m graph.Node) error {
	if err := repo.Put(ctx, ref, m); err != nil {
		return err
	}
	j.reporter.Report(Event{Kind: ManifestPushed, Ref: ref.String(), Digest: m.Desc.Digest, MediaType: m.Desc.MediaType, Size: m.Desc.Size})
	return nil
}

// blobTarget is a repository a blob must reach, and the images there
// that need it.
type blobTarget struct {
	repo   *registry.Repository
	from   name.Repository // a repository holding it to mount from, if any
	images []*destImage
}

// blobRoutes are, for every blob an image that passed vet needs and its
// repository lacks, in order, the repositories it must reach.
type blobRoutes struct {
	order   []v1.Hash
	descs   map[v1.Hash]v1.Descriptor
	targets map[v1.Hash][]*blobTarget
}

// routeBlobs decides where each blob goes, reporting the blobs that need
// not go anywhere.
func (j *pushJob) routeBlobs() blobRoutes {
	r := blobRoutes{descs: map[v1.Hash]v1.Descriptor{}, targets: map[v1.Hash][]*blobTarget{}}
	for _, img := range j.images {
		if img.err != nil {
			continue
		}
		for _, b := range img.graph.Blobs {
			h := b.Desc.Digest
			ev := Event{Ref: img.ref.Context().String(), Digest: h, MediaType: b.Desc.MediaType, Size: b.Desc.Size, Kind: BlobSkipped}
			from, mountable := img.dest.mountable[h]
			switch {
			case img.dest.present[h]:
				ev.Kind = BlobPresent
				j.reporter.Report(ev)
				continue
			case b.Foreign() && !j.archive.Has(h):
				ev.Reason = string(archive.ReasonForeign)
				j.reporter.Report(ev)
				continue
			case !mountable && !j.archive.Has(h) && img.dest.rebuild[h] == nil:
				continue // vet found it missing; the image has failed
			}
			if _, ok := r.targets[h]; !ok {
				r.order = append(r.order, h)
				r.descs[h] = b.Desc
			}
			var t *blobTarget
			for _, have := range r.targets[h] {
				if have.repo == img.repo {
					t = have
				}
			}
			if t == nil {
				t = &blobTarget{repo: img.repo, from: from}
				r.targets[h] = append(r.targets[h], t)
			}
			t.images = append(t.images, img)
		}
	}
	return r
}

// sendBlobs brings every blob an image that passed vet needs into its
// repository: a blob the archive carries is uploaded once, into the first
// repository that lacks it, and mounted into the others; a left-out blob
// found elsewhere in the destination registry is mounted. An image a blob
// fails to reach fails with it; the other images go on.
func (j *pushJob) sendBlobs(ctx context.Context) {
	routes := j.routeBlobs()
	var total int64
	for _, h := range routes.order {
		if routes.targets[h][0].from == (name.Repository{}) {
			total += routes.descs[h].Size // uploaded once; mounted elsewhere
		}
	}
	j.reporter.Report(Event{Kind: TransferPlanned, Size: total})
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
	eg.SetLimit(j.jobs)
	for _, h := range routes.order {
		eg.Go(func() error {
			j.sendBlob(ectx, routes.descs[h], routes.targets[h], fail)
			return nil
		})
	}
	eg.Wait()
}

// sendBlob brings one blob into each of its targets, calling fail for each
// target it cannot reach.
func (j *pushJob) sendBlob(ctx context.Context, desc v1.Descriptor, targets []*blobTarget, fail func(*blobTarget, error)) {
	var uploaded *registry.Repository
	var rebuilt string // the blob rebuilt from its delta, kept until every target has it
	defer func() {
		if rebuilt != "" {
			os.Remove(rebuilt)
		}
	}()
	send := func(t *blobTarget) error {
		if j.archive.Has(desc.Digest) {
			return j.uploadBlob(ctx, t.repo, j.archive, desc)
		}
		if rebuilt == "" {
			path, err := j.rebuildBlob(ctx, t, desc)
			if err != nil {
				return err
			}
			rebuilt = path
		}
		return j.uploadFile(ctx, t.repo, rebuilt, desc)
	}
	for _, t := range targets {
		var err error
		switch {
		case t.from != (name.Repository{}):
			err = j.mountBlob(ctx, t.repo, desc, t.from)
		case uploaded != nil:
			// A registry without cross-repository mounts gets the bytes
			// again.
			if err = j.mountBlob(ctx, t.repo, desc, uploaded.Name()); err != nil {
				err = send(t)
			}
		default:
			if err = send(t); err == nil {
				uploaded = t.repo
			}
		}
		if err != nil {
			fail(t, err)
		}
	}
}

// mountBlob mounts desc from the repository from into repo.
func (j *pushJob) mountBlob(ctx context.Context, repo *registry.Repository, desc v1.Descriptor, from name.Repository) error {
	if err := repo.Mount(ctx, desc.Digest, from); err != nil {
		return err
	}
	j.reporter.Report(Event{Kind: BlobMounted, Ref: repo.Name().String(), Digest: desc.Digest, MediaType: desc.MediaType, Size: desc.Size, From: from.String()})
	return nil
}

// rebuildBlob rebuilds desc from its sub-layer delta into a temporary
// file, verified, and returns its path; the caller removes it.
func (j *pushJob) rebuildBlob(ctx context.Context, t *blobTarget, desc v1.Descriptor) (string, error) {
	path, spooled, err := j.rebuilder.rebuild(ctx, t.repo, desc, t.images[0].dest.mountable)
	if err != nil {
		return "", err
	}
	j.reporter.Report(Event{Kind: BlobRebuilt, Ref: t.repo.Name().String(), Digest: desc.Digest, MediaType: desc.MediaType, Size: desc.Size,
		Reason: fmt.Sprintf("from its sub-layer delta, with %d bytes of base layer contents spooled to disk", spooled)})
	return path, nil
}

// fileBlob serves a blob from a local file, verified as it is read.
type fileBlob struct{ f *os.File }

func (s fileBlob) Blob(_ context.Context, d v1.Descriptor, report func(int64)) (io.ReadCloser, error) {
	r, err := verify.NewReader(io.NewSectionReader(s.f, 0, d.Size), d, s.f.Name(), report)
	return io.NopCloser(r), err
}

// uploadFile uploads desc from the file at path into repo.
func (j *pushJob) uploadFile(ctx context.Context, repo *registry.Repository, path string, desc v1.Descriptor) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("uploading %s: %w", desc.Digest, err)
	}
	defer f.Close()
	return j.uploadBlob(ctx, repo, fileBlob{f}, desc)
}

// uploadBlob uploads desc, read from src, into repo, reporting its start,
// progress and end.
func (j *pushJob) uploadBlob(ctx context.Context, repo *registry.Repository, src graph.BlobFetcher, desc v1.Descriptor) error {
	ev := Event{Kind: BlobStarted, Ref: repo.Name().String(), Digest: desc.Digest, MediaType: desc.MediaType, Size: desc.Size}
	j.reporter.Report(ev)
	err := repo.Upload(ctx, desc, func() (io.Reader, error) {
		return src.Blob(ctx, desc, func(n int64) {
			p := ev
			p.Kind, p.Complete = BlobProgress, n
			j.reporter.Report(p)
		})
	})
	if err != nil {
		return err
	}
	ev.Kind, ev.Complete = BlobDone, desc.Size
	j.reporter.Report(ev)
	return nil
}
