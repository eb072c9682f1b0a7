package imo

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"sync"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/imokit/imo/archive"
	"github.com/imokit/imo/internal/graph"
	"github.com/imokit/imo/internal/registry"
	"golang.org/x/sync/errgroup"
)

// PushVet checks, before anything is sent, that the destination holds
// every blob the archive at path references but leaves out: layers and
// configs, of every platform and every image. It asks the registry about
// each such blob (one HEAD request per blob and repository, in the
// destination repository itself). If any is missing it returns a
// [*MissingBlobsError] naming all of them, which wraps [ErrMissingBlobs].
//
// dst is an image reference, REGISTRY/REPO[:TAG][@DIGEST], for an archive
// of one image; it must name its registry ([ErrInvalidReference]
// otherwise). Without a tag the image goes to the tag it had at the source,
// or by digest when it had none; a digest must be the image's. For an
// archive of several images or a bundle, or when dst is a registry
// host[:port] alone or ends in "/", dst is a target, a registry
// host[:port] with an optional /prefix: each image goes to the target, then
// the repository path and tag of the reference the archive names it by (an
// archive of registry.example/team/app:v2 pushed to site:5000/mirror lands
// at site:5000/mirror/team/app:v2).
func (i *Incremental) PushVet(ctx context.Context, path, dst string) error {
	return i.onArchive(ctx, path, dst, i.VetArchive)
}

// PushVet is [Incremental.PushVet] with the default options: it checks no
// signature (see [WithVerifyKeys]).
func PushVet(ctx context.Context, path, dst string) error {
	return New().PushVet(ctx, path, dst)
}

// VetArchive is [Incremental.PushVet] for an opened archive, returning what
// it found for each image. The error is nil when every image passed;
// otherwise it joins each failed image's error.
func (i *Incremental) VetArchive(ctx context.Context, a *archive.Reader, dst string) ([]ImageResult, error) {
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
		return lj.vet(ctx)
	}
	j, err := i.openJob(ctx, a, dst, transport.PullScope)
	if err != nil {
		return nil, err
	}
	j.vetAll(ctx, false)
	return j.results()
}

// vetAll vets every image, recording in each what its destination holds
// or why it failed; with all, it asks about the blobs the archive carries
// too, which a push needs to know.
func (j *pushJob) vetAll(ctx context.Context, all bool) {
	bc := &blobCheck{known: map[string]bool{}}
	for _, img := range j.images {
		v := &vetter{bc: bc, j: j, repo: img.repo, g: img.graph,
			d: &destination{present: map[v1.Hash]bool{}, mountable: map[v1.Hash]name.Repository{}, rebuild: map[v1.Hash]*archive.PlanDelta{}}}
		if img.err = v.vet(ctx, all); img.err != nil {
			img.err = fmt.Errorf("%s: %w", img.ref, img.err)
			continue
		}
		img.dest = v.d
	}
}

// vetter vets one image at its destination repository.
type vetter struct {
	bc    *blobCheck
	j     *pushJob
	repo  *registry.Repository
	g     *graph.Graph
	d     *destination
	bases []*graph.Blob // base layers sub-layer deltas need at the destination
	mu    sync.Mutex
}

// vet asks the destination about every blob the archive leaves out, and,
// with all, about the blobs it carries too; left-out blobs the destination
// repository lacks are then looked for where they may be mounted from. It
// returns a [*MissingBlobsError] if any left-out blob is nowhere.
func (v *vetter) vet(ctx context.Context, all bool) error {
	var asked []*graph.Blob
	for _, b := range v.g.Blobs {
		if (all || !v.j.archive.Has(b.Desc.Digest)) && !b.Foreign() {
			asked = append(asked, b)
		}
	}
	if err := v.ask(ctx, asked); err != nil {
		return err
	}
	if err := v.ask(ctx, v.deltaBases()); err != nil {
		return err
	}
	if err := v.findMounts(ctx); err != nil {
		return err
	}
	if m := v.missing(); len(m) > 0 {
		e := &MissingBlobsError{Repository: v.repo.Name().String()}
		for _, b := range m {
			e.Blobs = append(e.Blobs, MissingBlob{Digest: b.Desc.Digest, Size: b.Desc.Size, MediaType: b.Desc.MediaType, NeededBy: b.NeededBy})
		}
		return e
	}
	return nil
}

// ask records which of blobs the destination repository holds.
func (v *vetter) ask(ctx context.Context, blobs []*graph.Blob) error {
	eg, ectx := errgroup.WithContext(ctx)
	eg.SetLimit(v.j.jobs)
	for _, b := range blobs {
		eg.Go(func() error {
			ok, err := v.bc.exists(ectx, v.repo, b.Desc.Digest)
			if err != nil || !ok {
				return err
			}
			v.mu.Lock()
			defer v.mu.Unlock()
			v.d.present[b.Desc.Digest] = true
			return nil
		})
	}
	return eg.Wait()
}

// deltaBases marks each layer carried as a sub-layer delta that the
// destination lacks as one to rebuild there, and returns the base layers
// the deltas draw on, which the destination must hold instead.
func (v *vetter) deltaBases() []*graph.Blob {
	for _, b := range v.g.Blobs {
		dl, _ := v.j.archive.Delta(b.Desc.Digest)
		if dl == nil || v.d.present[b.Desc.Digest] {
			continue
		}
		v.d.rebuild[b.Desc.Digest] = dl
		for _, base := range dl.Bases {
			if _, ok := v.g.Blob(base.Digest); !ok && !slices.ContainsFunc(v.bases, func(u *graph.Blob) bool { return u.Desc.Digest == base.Digest }) {
				v.bases = append(v.bases, &graph.Blob{Desc: base, NeededBy: []string{"the sub-layer delta of " + b.Desc.Digest.String()}})
			}
		}
	}
	return v.bases
}

// missing are the blobs the archive leaves out that the destination
// neither holds, nor can mount, nor rebuild.
func (v *vetter) missing() []*graph.Blob {
	var out []*graph.Blob
	for _, b := range append(slices.Clone(v.g.Blobs), v.bases...) {
		h := b.Desc.Digest
		if !v.j.archive.Has(h) && !b.Foreign() && v.d.rebuild[h] == nil && !v.d.present[h] && v.d.mountable[h] == (name.Repository{}) {
			out = append(out, b)
		}
	}
	return out
}

// findMounts looks for each blob still missing in the repositories it may
// be mounted from: a WithMountFrom repository, or one the archive's
// inventories saw it in.
func (v *vetter) findMounts(ctx context.Context) error {
	eg, ectx := errgroup.WithContext(ctx)
	eg.SetLimit(v.j.jobs)
	for _, b := range v.missing() {
		eg.Go(func() error {
			for _, from := range v.j.mountSources(v.repo.Name(), b.Desc.Digest) {
				ok, err := v.bc.exists(ectx, v.repo.In(from), b.Desc.Digest)
				switch registry.Status(err) {
				case http.StatusUnauthorized, http.StatusForbidden, http.StatusNotFound:
					continue // a source we may not read is no source
				}
				if err != nil {
					return err
				}
				if ok {
					v.mu.Lock()
					defer v.mu.Unlock()
					v.d.mountable[b.Desc.Digest] = from
					return nil
				}
			}
			return nil
		})
	}
	return eg.Wait()
}

// heldByTried bounds how many of the repositories an archive names for a
// left-out blob vet asks about: those under the push's target prefix.
const heldByTried = 16

// mountSources are the repositories of dst's registry that a blob the
// archive leaves out may be mounted from: those of WithMountFrom, then,
// when the push goes to a target, those the archive's inventories saw it
// in that lie under the target's prefix. An archive cannot make push read
// from repositories outside what the user named.
func (j *pushJob) mountSources(dst name.Repository, h v1.Hash) []name.Repository {
	out := mountFromRepos(dst, j.mountFrom)
	if j.target == nil {
		return out
	}
	tried := 0
	for _, r := range j.archive.HeldBy(h) {
		if from := dst.Registry.Repo(r); from != dst && j.target.within(r) && !slices.Contains(out, from) && tried < heldByTried {
			out = append(out, from)
			tried++
		}
	}
	return out
}
