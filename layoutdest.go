package imo

import (
	"context"
	"fmt"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/imokit/imo/archive"
	"github.com/imokit/imo/internal/graph"
	"github.com/imokit/imo/internal/layout"
	"github.com/imokit/imo/internal/reference"
	"golang.org/x/sync/errgroup"
)

// A vet or push destination written oci:DIR[:TAG] is an OCI image layout
// directory rather than a registry. Its images are index.json entries,
// named by their org.opencontainers.image.ref.name annotation.

// isLayoutDest reports whether dst names an OCI layout.
func isLayoutDest(dst string) bool { return strings.HasPrefix(dst, reference.LayoutPrefix) }

// layoutJob is an archive's images bound for an OCI layout.
type layoutJob struct {
	archive *archive.Reader
	dir     string
	where   string // what errors call the layout
	images  []layoutImage
}

// layoutImage is one image of the archive and its index.json entry at the
// destination.
type layoutImage struct {
	name  string // as the archive names it
	graph *graph.Graph
	entry v1.Descriptor
}

// result is the image's result: Layout names it in the layout.
func (img layoutImage) result(where string, err error) ImageResult {
	at := where
	if n := img.entry.Annotations[archive.RefNameAnnotation]; n != "" {
		at += ":" + n
	}
	return ImageResult{Image: img.name, Layout: at, Digest: img.graph.Top().Desc.Digest, Err: err}
}

// openLayoutJob reads the archive's images and names each in the layout
// dst: an archive of one image takes dst's tag, or the tag it had at the
// source, or none; the images of a bundle or of an archive of several
// take the references the archive names them by; artifacts referring to
// an image (signatures, say) go in unnamed.
func (i *Incremental) openLayoutJob(ctx context.Context, a *archive.Reader, dst string) (*layoutJob, error) {
	loc, err := reference.ParseLocation(dst)
	switch {
	case err != nil:
		return nil, fmt.Errorf("destination: %w: %q: %v", ErrInvalidReference, dst, err)
	case loc.Digest != "":
		return nil, fmt.Errorf("destination: %w: %q: a layout destination is oci:DIR[:TAG]; the image's digest is the archive's", ErrInvalidReference, dst)
	case len(a.Deltas()) > 0:
		return nil, fmt.Errorf("%s carries sub-layer deltas, which imo rebuilds at registries only: push it to a registry, or pull it again without --sublayer", a.Name())
	}
	gs, err := archiveGraphs(ctx, a)
	if err != nil {
		return nil, err
	}
	j := &layoutJob{archive: a, dir: loc.Path, where: reference.LayoutPrefix + loc.Path}
	bundle := a.Plan() != nil && a.Plan().Bundle
	var finals int
	for n := range gs {
		if a.Subject(n) == (v1.Hash{}) {
			finals++
		}
	}
	if loc.Tag != "" && (finals > 1 || bundle) {
		return nil, fmt.Errorf("destination: %w: %q: the archive holds %d images (a bundle, say), each named in the layout by its reference; give oci:DIR alone", ErrInvalidReference, dst, finals)
	}
	for n, g := range gs {
		img := layoutImage{name: a.ImageName(n), graph: g, entry: g.Top().Desc}
		name := ""
		switch {
		case a.Subject(n) != (v1.Hash{}):
		case finals > 1 || bundle:
			name = img.name
		case loc.Tag != "":
			name = loc.Tag
		default:
			name = sourceTag(img.name, a.Plan() != nil)
		}
		img.entry.Annotations = nil
		img.entry.Platform = nil
		if name != "" {
			img.entry.Annotations = map[string]string{archive.RefNameAnnotation: name}
		}
		j.images = append(j.images, img)
	}
	return j, nil
}

// vet checks that the layout holds every blob the archive leaves out,
// returning a result per image: a [*MissingBlobsError] for each image
// lacking some. A layout that does not exist yet holds nothing.
func (j *layoutJob) vet(ctx context.Context) ([]ImageResult, error) {
	l, err := layout.OpenIfExists(j.dir)
	if err != nil {
		return nil, err
	}
	if l != nil {
		defer l.Close()
	}
	out := make([]ImageResult, len(j.images))
	for n, img := range j.images {
		e := &MissingBlobsError{Repository: j.where}
		for _, b := range img.graph.Blobs {
			if err := ctx.Err(); err != nil {
				return nil, err
			}
			if j.archive.Has(b.Desc.Digest) || b.Foreign() {
				continue
			}
			has := false
			if l != nil {
				if has, err = l.Has(b.Desc); err != nil {
					return nil, err
				}
			}
			if !has {
				e.Blobs = append(e.Blobs, MissingBlob{Digest: b.Desc.Digest, Size: b.Desc.Size, MediaType: b.Desc.MediaType, NeededBy: b.NeededBy})
			}
		}
		if len(e.Blobs) > 0 {
			out[n] = img.result(j.where, fmt.Errorf("%s: %w", img.name, e))
			continue
		}
		out[n] = img.result(j.where, nil)
	}
	return out, failures(out)
}

// push vets, and only when every image passes writes the blobs the archive
// carries and the layout lacks, every manifest, and last index.json,
// atomically, holding the layout's lock throughout. A push that fails
// removes what it wrote (the directory too, when it made it), leaving the
// layout as it was.
func (j *layoutJob) push(ctx context.Context, jobs int) (out []ImageResult, err error) {
	if out, err = j.vet(ctx); err != nil {
		return out, err
	}
	l, err := layout.Create(ctx, j.dir)
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			l.Undo()
		}
		l.Close()
	}()
	blobs := map[v1.Hash]v1.Descriptor{}
	for _, img := range j.images {
		for _, m := range img.graph.Manifests {
			blobs[m.Desc.Digest] = m.Desc
		}
		for _, b := range img.graph.Blobs {
			if j.archive.Has(b.Desc.Digest) {
				blobs[b.Desc.Digest] = b.Desc
			}
		}
	}
	eg, ectx := errgroup.WithContext(ctx)
	eg.SetLimit(jobs)
	for _, desc := range blobs {
		eg.Go(func() error {
			rc, err := j.archive.Blob(ectx, desc, nil)
			if err != nil {
				return err
			}
			defer rc.Close()
			return l.WriteBlob(ectx, desc, rc)
		})
	}
	if err = eg.Wait(); err != nil {
		return nil, err
	}
	entries := make([]v1.Descriptor, len(j.images))
	for n, img := range j.images {
		entries[n] = img.entry
	}
	if err = l.SetImages(entries); err != nil {
		return nil, err
	}
	return out, nil
}
