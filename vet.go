package imo

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"sync"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"golang.org/x/sync/errgroup"
)

// ImageResult is what became of one image of an archive at its
// destination.
type ImageResult struct {
	// Image is the reference the archive names the image by.
	Image string
	// Destination is where the image goes: a tag, or a digest.
	Destination name.Reference
	// Digest is the digest of the image's top manifest.
	Digest v1.Hash
	// Err is why the image failed to vet or push, or nil. When vet finds
	// blobs missing it is a [*MissingBlobsError].
	Err error
}

// Pushed is the destination at the image's digest: REPO:TAG@DIGEST when
// the image went to a tag, REPO@DIGEST otherwise.
func (r ImageResult) Pushed() name.Digest {
	if t, ok := r.Destination.(name.Tag); ok {
		if d, err := name.NewDigest(t.String() + "@" + r.Digest.String()); err == nil {
			return d
		}
	}
	return r.Destination.Context().Digest(r.Digest.String())
}

// PushVet checks, before anything is sent, that the destination holds
// every blob the archive references but leaves out: layers and configs, of
// every platform and every image. It asks the registry about each such
// blob (one HEAD request per blob and repository, in the destination
// repository itself). If any is missing it returns a [*MissingBlobsError]
// naming all of them, which wraps [ErrMissingBlobs].
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
func (i *Incremental) PushVet(ctx context.Context, archive, dst string) error {
	_, err := i.VetArchive(ctx, archive, dst)
	return err
}

// VetArchive is [Incremental.PushVet], returning what it found for each
// image. The error is nil when every image passed; otherwise it joins
// each failed image's error.
func (i *Incremental) VetArchive(ctx context.Context, archive, dst string) ([]ImageResult, error) {
	if i.err != nil {
		return nil, i.err
	}
	defer i.push.closeIdle()
	j, err := i.openJob(ctx, archive, archive, dst, transport.PullScope)
	if err != nil {
		return nil, err
	}
	defer j.close()
	i.vetAll(ctx, j, false)
	return j.results()
}

// PushVet is [Incremental.PushVet] with the default options.
func PushVet(ctx context.Context, archive, dst string) error {
	return New().PushVet(ctx, archive, dst)
}

// pushJob is an archive opened for vet or push, and where each of its
// images goes.
type pushJob struct {
	target    *target // where images go, when dst is a target
	archive   *archiveFile
	file      io.Closer
	images    []*destImage
	rebuilder *rebuilder // for archives with sub-layer deltas
}

// destImage is one image of an archive at its destination.
type destImage struct {
	name    string // the reference the archive names it by
	graph   *imageGraph
	ref     name.Reference
	client  *repoClient
	subject *destImage   // for an artifact, the image it refers to
	dest    *destination // what vet found at the destination
	err     error        // why the image failed
}

func (j *pushJob) close() { j.file.Close() }

// results returns every image's result, and an error joining those of the
// images that failed.
func (j *pushJob) results() ([]ImageResult, error) {
	out := make([]ImageResult, len(j.images))
	var errs []error
	for n, img := range j.images {
		out[n] = ImageResult{Image: img.name, Destination: img.ref, Digest: img.graph.top().desc.Digest, Err: img.err}
		if img.err != nil {
			errs = append(errs, img.err)
		}
	}
	switch {
	case len(errs) == 0:
		return out, nil
	case len(j.images) == 1:
		return out, errs[0]
	}
	return out, fmt.Errorf("%d of %d images failed: %w", len(errs), len(j.images), errors.Join(errs...))
}

// openJob reads the archive at path (called in errors), decides where
// each image goes, and logs in to each destination repository for action
// (pull to vet, push to push).
func (i *Incremental) openJob(ctx context.Context, path, called, dst, action string) (*pushJob, error) {
	a, file, err := openArchive(path, called)
	if err != nil {
		return nil, err
	}
	j := &pushJob{archive: a, file: file}
	if err := i.placeImages(ctx, j, dst); err != nil {
		file.Close()
		return nil, err
	}
	layers := map[v1.Hash]v1.Descriptor{}
	for _, img := range j.images {
		for _, b := range img.graph.blobs {
			layers[b.desc.Digest] = b.desc
		}
	}
	if err := a.checkDeltas(layers); err != nil {
		file.Close()
		return nil, err
	}
	repos := map[string]name.Repository{}
	for _, img := range j.images {
		repos[img.ref.Context().String()] = img.ref.Context()
	}
	clients := map[string]*repoClient{}
	var mu sync.Mutex
	eg, ectx := errgroup.WithContext(ctx)
	eg.SetLimit(i.opts.jobs)
	for key, repo := range repos {
		eg.Go(func() error {
			c, err := newRepoClient(ectx, repo, i.push, i.opts.pushAuth, i.opts.keychain, i.opts.retry, i.destScopes(repo, action))
			if err != nil {
				return err
			}
			mu.Lock()
			clients[key] = c
			mu.Unlock()
			return nil
		})
	}
	if err := eg.Wait(); err != nil {
		file.Close()
		return nil, err
	}
	for _, img := range j.images {
		img.client = clients[img.ref.Context().String()]
	}
	return j, nil
}

// placeImages walks the archive's images and decides where each goes.
// An artifact that refers to an image (a signature, say) goes into that
// image's repository.
func (i *Incremental) placeImages(ctx context.Context, j *pushJob, dst string) error {
	a := j.archive
	gs, err := a.images(ctx)
	if err != nil {
		return err
	}
	var images, artifacts []*destImage
	subjects := map[*destImage]v1.Hash{} // what each artifact refers to
	for n, g := range gs {
		img := &destImage{name: a.imageName(n), graph: g}
		if subject := a.subject(n); subject != (v1.Hash{}) {
			for _, s := range images {
				if s.graph.seen[subject] {
					img.subject = s
				}
			}
			if img.subject == nil {
				return a.invalid("%s refers to %s, which no image before it in %s holds", img.name, subject, IndexFile)
			}
			artifacts = append(artifacts, img)
			subjects[img] = subject
			continue
		}
		images = append(images, img)
	}
	bundle := a.plan != nil && a.plan.Bundle
	if len(images) == 1 && !bundle && !isTarget(dst) {
		if images[0].ref, err = i.placeImage(dst, images[0], a.plan != nil); err != nil {
			return err
		}
	} else {
		t, err := i.parseTarget(dst)
		switch {
		case err != nil && len(images) > 1:
			return fmt.Errorf("the archive holds %d images, so the destination must be a registry or registry/prefix: %w", len(images), err)
		case err != nil && bundle:
			return fmt.Errorf("the archive is a bundle (pull --from), so the destination must be a registry or registry/prefix: %w", err)
		case err != nil:
			return err
		}
		j.target = &t
		for _, img := range images {
			if img.ref, err = t.ref(img.name, img.graph.top().desc.Digest); err != nil {
				return fmt.Errorf("image %s of %s: %w", img.name, a.name, err)
			}
		}
	}
	for _, art := range artifacts {
		src, err := parseSource(art.name)
		if err != nil {
			return fmt.Errorf("artifact %s of %s: %w", art.name, a.name, err)
		}
		if err := checkArtifact(src, art.graph.top(), subjects[art]); err != nil {
			return a.invalid("artifact %s: %v", art.name, err)
		}
		art.ref = src.in(art.subject.ref.Context(), art.graph.top().desc.Digest)
	}
	j.images = append(images, artifacts...)
	seen := map[string]*destImage{}
	for _, img := range j.images {
		if prev, dup := seen[img.ref.String()]; dup && prev.graph.top().desc.Digest != img.graph.top().desc.Digest {
			return fmt.Errorf("%w: %s and %s of %s both land at %s", ErrInvalidTarget, prev.name, img.name, a.name, img.ref)
		}
		seen[img.ref.String()] = img
	}
	return nil
}

// checkArtifact checks that an artifact really refers to subject, so that
// an archive cannot place an arbitrary image under an arbitrary tag of its
// subject's repository: a cosign artifact must be named by the tag
// sha256-HEX.sig, .att or .sbom of the subject, and an OCI referrer must be
// named by its own digest and name subject in its manifest.
func checkArtifact(src imageRef, top manifestNode, subject v1.Hash) error {
	switch {
	case src.tag != "":
		for _, suffix := range cosignSuffixes {
			if src.tag == cosignTag(src.repo, subject, suffix).TagStr() {
				return nil
			}
		}
		return fmt.Errorf("the tag %q is not one cosign gives what it attaches to %s", src.tag, subject)
	case src.digest != "":
		var m struct {
			Subject *v1.Descriptor `json:"subject"`
		}
		if src.digest != top.desc.Digest.String() {
			return fmt.Errorf("named by %s, but its manifest is %s", src.digest, top.desc.Digest)
		}
		if json.Unmarshal(top.raw, &m) != nil || m.Subject == nil || m.Subject.Digest != subject {
			return fmt.Errorf("its manifest does not name %s as its subject", subject)
		}
		return nil
	}
	return fmt.Errorf("not a tag or digest reference")
}

// destination is what the destination holds of an image's blobs.
type destination struct {
	// present are the blobs the destination repository holds.
	present map[v1.Hash]bool
	// mountable are blobs the archive leaves out that the destination
	// repository lacks but a WithMountFrom repository holds.
	mountable map[v1.Hash]name.Repository
	// rebuild are the layers the destination lacks that the archive
	// carries as sub-layer deltas.
	rebuild map[v1.Hash]*PlanDelta
}

// blobCheck remembers what repositories hold, so that a blob shared by
// several images is asked about once per repository.
type blobCheck struct {
	mu    sync.Mutex
	known map[string]bool
}

func (bc *blobCheck) exists(ctx context.Context, c *repoClient, repo name.Repository, h v1.Hash) (bool, error) {
	key := repo.String() + "@" + h.String()
	bc.mu.Lock()
	ok, asked := bc.known[key]
	bc.mu.Unlock()
	if asked {
		return ok, nil
	}
	ok, err := c.blobExists(ctx, repo, h)
	if err != nil {
		return false, err
	}
	bc.mu.Lock()
	bc.known[key] = ok
	bc.mu.Unlock()
	return ok, nil
}

// vetAll vets every image, recording in each what its destination holds
// or why it failed; with all, it asks about the blobs the archive carries
// too, which a push needs to know.
func (i *Incremental) vetAll(ctx context.Context, j *pushJob, all bool) {
	bc := &blobCheck{known: map[string]bool{}}
	for _, img := range j.images {
		img.dest, img.err = i.vet(ctx, bc, j, img.client, img.graph, all)
		if img.err != nil {
			img.err = fmt.Errorf("%s: %w", img.ref, img.err)
		}
	}
}

// vet asks the destination about every blob the archive leaves out, and,
// with all, about the blobs it carries too; left-out blobs the destination
// repository lacks are then looked for in the WithMountFrom repositories.
// It returns a [*MissingBlobsError] if any left-out blob is nowhere.
func (i *Incremental) vet(ctx context.Context, bc *blobCheck, j *pushJob, c *repoClient, g *imageGraph, all bool) (*destination, error) {
	a := j.archive
	d := &destination{present: map[v1.Hash]bool{}, mountable: map[v1.Hash]name.Repository{}, rebuild: map[v1.Hash]*PlanDelta{}}
	var mu sync.Mutex
	ask := func(blobs []*blobUse, repo name.Repository, record func(v1.Hash)) error {
		eg, ectx := errgroup.WithContext(ctx)
		eg.SetLimit(i.opts.jobs)
		for _, b := range blobs {
			eg.Go(func() error {
				ok, err := bc.exists(ectx, c, repo, b.desc.Digest)
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
	// A layer carried as a sub-layer delta that the destination lacks is
	// rebuilt there from base layers, which it must hold instead.
	var bases []*blobUse
	for _, b := range g.blobs {
		dl := a.deltas[b.desc.Digest]
		if dl == nil || d.present[b.desc.Digest] {
			continue
		}
		d.rebuild[b.desc.Digest] = dl
		for _, base := range dl.Bases {
			if _, ok := g.byDigest[base.Digest]; !ok && !slices.ContainsFunc(bases, func(u *blobUse) bool { return u.desc.Digest == base.Digest }) {
				bases = append(bases, &blobUse{desc: base, neededBy: []string{"the sub-layer delta of " + b.desc.Digest.String()}})
			}
		}
	}
	if err := ask(bases, c.repo, func(h v1.Hash) { d.present[h] = true }); err != nil {
		return nil, err
	}
	missing := func() []*blobUse {
		var out []*blobUse
		for _, b := range append(slices.Clone(g.blobs), bases...) {
			h := b.desc.Digest
			if !a.has(h) && !b.foreign() && d.rebuild[h] == nil && !d.present[h] && d.mountable[h] == (name.Repository{}) {
				out = append(out, b)
			}
		}
		return out
	}
	// Each blob still missing may be mounted from a WithMountFrom
	// repository or from one the archive's inventories saw it in.
	eg, ectx := errgroup.WithContext(ctx)
	eg.SetLimit(i.opts.jobs)
	for _, b := range missing() {
		eg.Go(func() error {
			for _, from := range i.mountSources(c.repo, j, b.desc.Digest) {
				ok, err := bc.exists(ectx, c, from, b.desc.Digest)
				var te *transport.Error
				if errors.As(err, &te) && (te.StatusCode == http.StatusUnauthorized || te.StatusCode == http.StatusForbidden || te.StatusCode == http.StatusNotFound) {
					continue // a source we may not read is no source
				}
				if err != nil {
					return err
				}
				if ok {
					mu.Lock()
					d.mountable[b.desc.Digest] = from
					mu.Unlock()
					return nil
				}
			}
			return nil
		})
	}
	if err := eg.Wait(); err != nil {
		return nil, err
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

// mountSources are the repositories of dst's registry that a blob the
// archive leaves out may be mounted from: those of WithMountFrom, then,
// when the push goes to a target, those the archive's inventories saw it
// in that lie under the target's prefix. An archive cannot make push read
// from repositories outside what the user named.
func (i *Incremental) mountSources(dst name.Repository, j *pushJob, h v1.Hash) []name.Repository {
	out := i.mountFromRepos(dst)
	if j.target == nil {
		return out
	}
	tried := 0
	for _, r := range j.archive.heldBy[h] {
		if from := dst.Registry.Repo(r); from != dst && j.target.within(r) && !slices.Contains(out, from) && tried < heldByTried {
			out = append(out, from)
			tried++
		}
	}
	return out
}

// destScopes are the token scopes for the destination repository with the
// given action, and pull on the WithMountFrom repositories. Pull access to
// other repositories (to mount a blob from another destination of a
// bundle, or from where an inventory saw it) is asked for when a registry
// challenges for it, so that a token request does not grow with every
// repository of a job.
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
