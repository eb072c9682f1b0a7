package imo

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/imokit/imo/archive"
	"github.com/imokit/imo/internal/graph"
	"github.com/imokit/imo/internal/reference"
	"github.com/imokit/imo/internal/registry"
	"github.com/imokit/imo/internal/sublayer"
	"github.com/imokit/imo/volume"
	"golang.org/x/sync/errgroup"
)

// ImageResult is what became of one image of an archive at its
// destination.
type ImageResult struct {
	// Image is the reference the archive names the image by.
	Image string
	// Destination is where the image goes in a registry: a tag, or a
	// digest. It is nil for an OCI layout destination.
	Destination name.Reference
	// Layout is where the image goes in an OCI layout destination:
	// oci:DIR, then ":" and its name in index.json when it has one. It is
	// empty for a registry.
	Layout string
	// Digest is the digest of the image's top manifest.
	Digest v1.Hash
	// Err is why the image failed to vet or push, or nil. When vet finds
	// blobs missing it is a [*MissingBlobsError].
	Err error
}

// Place is where the image goes: its registry Destination, or its Layout.
func (r ImageResult) Place() string {
	if r.Destination == nil {
		return r.Layout
	}
	return r.Destination.String()
}

// String is where the image goes, at its digest: REPO:TAG@DIGEST,
// REPO@DIGEST, or, in a layout, oci:DIR[:NAME]@DIGEST.
func (r ImageResult) String() string {
	if r.Destination == nil {
		return r.Layout + "@" + r.Digest.String()
	}
	return r.Pushed().String()
}

// Pushed is the registry destination at the image's digest: REPO:TAG@DIGEST
// when the image went to a tag, REPO@DIGEST otherwise. It is for registry
// destinations only; String covers layouts too.
func (r ImageResult) Pushed() name.Digest {
	if t, ok := r.Destination.(name.Tag); ok {
		if d, err := name.NewDigest(t.String() + "@" + r.Digest.String()); err == nil {
			return d
		}
	}
	return r.Destination.Context().Digest(r.Digest.String())
}

// onArchive opens the archive at path, an archive file (also written
// oci-archive:FILE), a volume of a set or a directory of volumes, and vets
// or pushes it with op. A volume set is
// checked piece by piece first: one that parity cannot make whole is
// refused before anything is sent.
func (i *Incremental) onArchive(ctx context.Context, path, dst string, op func(context.Context, *archive.Reader, string) ([]ImageResult, error)) error {
	if i.err != nil {
		return i.err
	}
	a, _, err := volume.OpenArchive(ctx, true, strings.TrimPrefix(path, reference.OCIArchivePrefix))
	if err != nil && len(i.opts.verifyKeys) > 0 && errors.Is(err, archive.ErrInvalid) {
		return fmt.Errorf("%w: %w", ErrUntrusted, err)
	}
	if err != nil {
		return err
	}
	defer a.Close()
	_, err = op(ctx, a, dst)
	return err
}

// verify checks the archive against the keys of WithVerifyKeys, if any,
// before anything is sent.
func (i *Incremental) verify(ctx context.Context, a *archive.Reader) error {
	if len(i.opts.verifyKeys) == 0 {
		return nil
	}
	signer, err := a.Verify(ctx, i.opts.verifyKeys)
	if err != nil {
		return err
	}
	i.opts.reporter.Report(Event{Kind: ArchiveVerified, Ref: a.Name(), Digest: a.PlanDigest(), Signer: archive.Fingerprint(signer)})
	return nil
}

// pushJob is an archive opened for vet or push, and where each of its
// images goes.
type pushJob struct {
	target    *target // where images go, when dst is a target
	archive   *archive.Reader
	images    []*destImage
	rebuilder *rebuilder // for archives with sub-layer deltas
	reporter  Reporter
	jobs      int
	mountFrom []string // WithMountFrom's repositories
}

// destImage is one image of an archive at its destination.
type destImage struct {
	name    string // the reference the archive names it by
	graph   *graph.Graph
	ref     name.Reference
	repo    *registry.Repository
	subject *destImage   // for an artifact, the image it refers to
	dest    *destination // what vet found at the destination
	err     error        // why the image failed
}

// results returns every image's result, and an error joining those of the
// images that failed.
func (j *pushJob) results() ([]ImageResult, error) {
	out := make([]ImageResult, len(j.images))
	for n, img := range j.images {
		out[n] = ImageResult{Image: img.name, Destination: img.ref, Digest: img.graph.Top().Desc.Digest, Err: img.err}
	}
	return out, failures(out)
}

// failures joins the errors of the images that failed: nil when none did,
// the image's own error for an archive of one.
func failures(out []ImageResult) error {
	var errs []error
	for _, r := range out {
		if r.Err != nil {
			errs = append(errs, r.Err)
		}
	}
	switch {
	case len(errs) == 0:
		return nil
	case len(out) == 1:
		return errs[0]
	}
	return fmt.Errorf("%d of %d images failed: %w", len(errs), len(out), errors.Join(errs...))
}

// openJob reads the archive's images, decides where each goes, checks its
// sub-layer deltas, and logs in to each destination repository for action
// (pull to vet, push to push).
func (i *Incremental) openJob(ctx context.Context, a *archive.Reader, dst, action string) (*pushJob, error) {
	gs, err := archiveGraphs(ctx, a)
	if err != nil {
		return nil, err
	}
	j := &pushJob{archive: a, reporter: i.opts.reporter, jobs: i.opts.jobs, mountFrom: i.opts.mountFrom}
	if err := i.placeImages(j, gs, dst); err != nil {
		return nil, err
	}
	layers := map[v1.Hash]v1.Descriptor{}
	for _, img := range j.images {
		for _, b := range img.graph.Blobs {
			layers[b.Desc.Digest] = b.Desc
		}
	}
	if err := checkDeltas(a, layers); err != nil {
		return nil, err
	}
	repos := map[string]name.Repository{}
	for _, img := range j.images {
		repos[img.ref.Context().String()] = img.ref.Context()
	}
	opened := map[string]*registry.Repository{}
	var mu sync.Mutex
	eg, ectx := errgroup.WithContext(ctx)
	eg.SetLimit(i.opts.jobs)
	for key, repo := range repos {
		eg.Go(func() error {
			r, err := i.push.Open(ectx, repo, i.destScopes(repo, action)...)
			if err != nil {
				return err
			}
			mu.Lock()
			defer mu.Unlock()
			opened[key] = r
			return nil
		})
	}
	if err := eg.Wait(); err != nil {
		return nil, err
	}
	for _, img := range j.images {
		img.repo = opened[img.ref.Context().String()]
	}
	return j, nil
}

// archiveGraphs reads the manifest graph of each image of the archive.
func archiveGraphs(ctx context.Context, a *archive.Reader) ([]*graph.Graph, error) {
	gs, err := graph.WalkAll(ctx, a.Index().Manifests, a, a.Name())
	if err != nil && ctx.Err() == nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrInvalidArchive, a.Name(), err)
	}
	return gs, err
}

// placeImages decides where each image of the archive goes. An artifact
// that refers to an image (a signature, say) goes into that image's
// repository.
func (i *Incremental) placeImages(j *pushJob, gs []*graph.Graph, dst string) error {
	a := j.archive
	var images, artifacts []*destImage
	subjects := map[*destImage]v1.Hash{} // what each artifact refers to
	for n, g := range gs {
		img := &destImage{name: a.ImageName(n), graph: g}
		subject := a.Subject(n)
		if subject == (v1.Hash{}) {
			images = append(images, img)
			continue
		}
		for _, s := range images {
			if s.graph.HasManifest(subject) {
				img.subject = s
			}
		}
		if img.subject == nil {
			return fmt.Errorf("%w: %s: %s refers to %s, which no image before it in %s holds", ErrInvalidArchive, a.Name(), img.name, subject, archive.IndexFile)
		}
		artifacts = append(artifacts, img)
		subjects[img] = subject
	}
	if err := i.placeFinals(j, images, dst); err != nil {
		return err
	}
	for _, art := range artifacts {
		src, err := parseSource(art.name)
		if err != nil {
			return fmt.Errorf("artifact %s of %s: %w", art.name, a.Name(), err)
		}
		if err := checkArtifact(src, art.graph.Top(), subjects[art]); err != nil {
			return fmt.Errorf("%w: %s: artifact %s: %v", ErrInvalidArchive, a.Name(), art.name, err)
		}
		art.ref = src.In(art.subject.ref.Context(), art.graph.Top().Desc.Digest)
	}
	j.images = append(images, artifacts...)
	seen := map[string]*destImage{}
	for _, img := range j.images {
		if prev, dup := seen[img.ref.String()]; dup && prev.graph.Top().Desc.Digest != img.graph.Top().Desc.Digest {
			return fmt.Errorf("%w: %s and %s of %s both land at %s", ErrInvalidTarget, prev.name, img.name, a.Name(), img.ref)
		}
		seen[img.ref.String()] = img
	}
	return nil
}

// placeFinals decides where the final images go: to dst itself for an
// archive of one image and a destination that names an image, each under
// the target dst otherwise.
func (i *Incremental) placeFinals(j *pushJob, images []*destImage, dst string) error {
	a := j.archive
	bundle := a.Plan() != nil && a.Plan().Bundle
	if len(images) == 1 && !bundle && !isTarget(dst) {
		ref, err := i.placeImage(dst, images[0], a.Plan() != nil)
		images[0].ref = ref
		return err
	}
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
		if img.ref, err = t.ref(img.name, img.graph.Top().Desc.Digest); err != nil {
			return fmt.Errorf("image %s of %s: %w", img.name, a.Name(), err)
		}
	}
	return nil
}

// checkArtifact checks that an artifact really refers to subject, so that
// an archive cannot place an arbitrary image under an arbitrary tag of its
// subject's repository: a cosign artifact must be named by the tag
// sha256-HEX.sig, .att or .sbom of the subject, and an OCI referrer must be
// named by its own digest and name subject in its manifest.
func checkArtifact(src reference.Ref, top graph.Node, subject v1.Hash) error {
	switch {
	case src.Tag != "":
		for _, suffix := range cosignSuffixes {
			if src.Tag == cosignTag(src.Repo, subject, suffix).TagStr() {
				return nil
			}
		}
		return fmt.Errorf("the tag %q is not one cosign gives what it attaches to %s", src.Tag, subject)
	case src.Digest != "":
		var m struct {
			Subject *v1.Descriptor `json:"subject"`
		}
		if src.Digest != top.Desc.Digest.String() {
			return fmt.Errorf("named by %s, but its manifest is %s", src.Digest, top.Desc.Digest)
		}
		if json.Unmarshal(top.Raw, &m) != nil || m.Subject == nil || m.Subject.Digest != subject {
			return fmt.Errorf("its manifest does not name %s as its subject", subject)
		}
		return nil
	}
	return fmt.Errorf("not a tag or digest reference")
}

// destScopes are the token scopes for the destination repository with the
// given action, and pull on the WithMountFrom repositories. Pull access to
// other repositories (to mount a blob from another destination of a
// bundle, or from where an inventory saw it) is asked for when a registry
// challenges for it, so that a token request does not grow with every
// repository of a job.
func (i *Incremental) destScopes(repo name.Repository, action string) []string {
	scopes := []string{repo.Scope(action)}
	for _, from := range mountFromRepos(repo, i.opts.mountFrom) {
		scopes = append(scopes, from.Scope(transport.PullScope))
	}
	return scopes
}

// mountFromRepos are the repositories paths names (WithMountFrom's), in
// the destination's registry.
func mountFromRepos(dst name.Repository, paths []string) []name.Repository {
	var out []name.Repository
	for _, r := range paths {
		out = append(out, dst.Registry.Repo(r))
	}
	return out
}

// destination is what the destination holds of an image's blobs.
type destination struct {
	// present are the blobs the destination repository holds.
	present map[v1.Hash]bool
	// mountable are blobs the archive leaves out that the destination
	// repository lacks but a repository it may mount from holds.
	mountable map[v1.Hash]name.Repository
	// rebuild are the layers the destination lacks that the archive
	// carries as sub-layer deltas.
	rebuild map[v1.Hash]*archive.PlanDelta
}

// blobCheck remembers what repositories hold, so that a blob shared by
// several images is asked about once per repository.
type blobCheck struct {
	mu    sync.Mutex
	known map[string]bool
}

func (bc *blobCheck) exists(ctx context.Context, repo *registry.Repository, h v1.Hash) (bool, error) {
	key := repo.Name().String() + "@" + h.String()
	bc.mu.Lock()
	ok, asked := bc.known[key]
	bc.mu.Unlock()
	if asked {
		return ok, nil
	}
	ok, err := repo.Exists(ctx, h)
	if err != nil {
		return false, err
	}
	bc.mu.Lock()
	bc.known[key] = ok
	bc.mu.Unlock()
	return ok, nil
}

// checkDeltas checks, before anything is sent, that every delta in the
// archive rebuilds a layer of its images (layers lists them), of that
// layer's size, with a recipe that makes its media type and that this
// build reproduces.
func checkDeltas(a *archive.Reader, layers map[v1.Hash]v1.Descriptor) error {
	for _, h := range a.Deltas() {
		_, s := a.Delta(h)
		hdr, err := sublayer.ReadHeader(s)
		if err != nil {
			return fmt.Errorf("%w: %s: the delta of %s: %v", ErrInvalidArchive, a.Name(), h, err)
		}
		desc, ok := layers[h]
		switch {
		case hdr.Digest != h:
			return fmt.Errorf("%w: %s: the delta in %s rebuilds %s", ErrInvalidArchive, a.Name(), archive.DeltaName(h), hdr.Digest)
		case !ok:
			return fmt.Errorf("%w: %s: %s holds a delta of %s, which no image of the archive uses", ErrInvalidArchive, a.Name(), archive.DeltaName(h), h)
		case hdr.Size != desc.Size || !recipeFits(hdr.Recipe.Encoder, desc.MediaType):
			return fmt.Errorf("%w: %s: the delta of %s makes a %d-byte %s blob, but the layer is a %d-byte %s", ErrInvalidArchive, a.Name(), h, hdr.Size, hdr.Recipe.Encoder, desc.Size, desc.MediaType)
		}
		if err := sublayer.CheckRecipe(&hdr.Recipe); err != nil {
			return fmt.Errorf("%w: layer %s of %s needs %s: %v", ErrEncoderMismatch, h, a.Name(), hdr.Recipe.String(), err)
		}
	}
	return nil
}

// recipeFits reports whether a blob of media type mt can be what encoder
// writes: gzip for the gzip layer types, zstd for the zstd one.
func recipeFits(encoder string, mt types.MediaType) bool {
	switch encoder {
	case sublayer.EncoderGzip, sublayer.EncoderKlauspostGzip, sublayer.EncoderPgzip:
		return mt == types.DockerLayer || mt == types.OCILayer
	case sublayer.EncoderZstd:
		return mt == types.OCILayerZStd
	}
	return false
}
