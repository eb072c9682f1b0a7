package imo

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/imokit/imo/archive"
	"github.com/imokit/imo/internal/dockerarchive"
	"github.com/imokit/imo/internal/graph"
	"github.com/imokit/imo/internal/layout"
	"github.com/imokit/imo/internal/reference"
	"github.com/imokit/imo/internal/registry"
)

// imageSource is where a pull reads an image: a registry repository, an
// OCI layout directory, an OCI layout in a tar, or a docker-archive. Manifests and blobs
// come checked against their descriptors; BlobFrom's bytes are checked by
// the resumable writer.
type imageSource interface {
	fetcher
	BlobFrom(ctx context.Context, desc v1.Descriptor, off int64, report func(int64)) (io.ReadCloser, error)
}

// pulledImage is one final image of a pull, or an artifact referring to
// one, or a base.
type pulledImage struct {
	name    string         // the image as the user wrote it, for events and errors
	ref     name.Reference // in a registry; nil elsewhere
	graph   *graph.Graph
	src     imageSource
	repo    *registry.Repository // src, when it is a registry; nil elsewhere
	subject v1.Hash              // for an artifact, the manifest it refers to
	base    *pulledImage         // for a final image, its base; nil for scratch and artifacts
}

// fetchImage opens where loc lives (through client, for a registry),
// resolves the image it names, and reads its manifest tree, keeping only
// the given platforms when there are any. A registry image's ref is its
// tag when loc names one (checked to agree with a digest loc names too),
// else its digest. A layout or archive opened is added to opened, for the
// caller to close.
func (i *Incremental) fetchImage(ctx context.Context, client *registry.Client, loc reference.Location, platforms []v1.Platform, opened *closers) (pulledImage, error) {
	img, top, err := i.openImage(ctx, client, loc, opened)
	if err != nil {
		return pulledImage{}, err
	}
	i.opts.reporter.Report(Event{Kind: ImageResolved, Ref: loc.String(), Digest: top.Desc.Digest, MediaType: top.Desc.MediaType, Size: top.Desc.Size})
	if len(platforms) > 0 {
		if top, err = selectPlatforms(ctx, img.src, img.name, top, platforms); err != nil {
			return pulledImage{}, err
		}
	}
	if img.graph, err = graph.Walk(ctx, top, img.src, img.name, i.opts.jobs); err != nil {
		return pulledImage{}, fmt.Errorf("reading manifests of %s: %w", loc, err)
	}
	return img, nil
}

// openImage opens where loc lives and reads the top manifest of the image
// it names.
func (i *Incremental) openImage(ctx context.Context, client *registry.Client, loc reference.Location, opened *closers) (pulledImage, graph.Node, error) {
	img := pulledImage{name: loc.String()}
	var idx *v1.IndexManifest
	var where string // what errors call the layout
	switch loc.Kind {
	case reference.Registry:
		repo, err := client.Open(ctx, loc.Ref.Repo)
		if err != nil {
			return img, graph.Node{}, err
		}
		top, err := resolveRef(ctx, repo, loc.Ref)
		if err != nil {
			return img, graph.Node{}, err
		}
		img.ref, img.repo, img.src = loc.Ref.Fetch(), repo, repo
		if loc.Ref.Tag != "" {
			img.ref = loc.Ref.Repo.Tag(loc.Ref.Tag)
		}
		return img, top, nil
	case reference.Layout:
		l, err := layout.Open(loc.Path)
		if err != nil {
			return img, graph.Node{}, err
		}
		opened.add(l)
		img.src, where, idx = l, l.Name(), l.Index()
	case reference.OCIArchive:
		a, err := openOCIArchive(loc.Path)
		if err != nil {
			return img, graph.Node{}, err
		}
		opened.add(a)
		img.src, where, idx = a, reference.OCIArchivePrefix+loc.Path, a.Index()
	case reference.DockerArchive:
		d, err := dockerarchive.Open(loc.Path, loc.Tag)
		if err != nil {
			return img, graph.Node{}, err
		}
		opened.add(d)
		img.src = d
		raw, err := d.Manifest(ctx, d.Top())
		return img, graph.Node{Desc: d.Top(), Raw: raw}, err
	}
	desc, err := layout.Find(idx, where, loc.Tag, loc.Digest)
	if err != nil {
		return img, graph.Node{}, err
	}
	raw, err := img.src.Manifest(ctx, desc)
	if err != nil {
		return img, graph.Node{}, fmt.Errorf("reading %s: %w", loc, err)
	}
	return img, graph.Node{Desc: desc, Raw: raw}, nil
}

// openOCIArchive opens an OCI layout in a tar, saying when path is
// missing, a directory, or another kind of tar.
func openOCIArchive(path string) (*archive.Reader, error) {
	fi, err := os.Stat(path)
	switch {
	case err != nil:
		return nil, fmt.Errorf("oci-archive: %w", err)
	case fi.IsDir():
		return nil, fmt.Errorf("%w: oci-archive:%s is a directory; an OCI layout directory is oci:%s", archive.ErrInvalid, path, path)
	}
	return archive.Open(path)
}

// closers are the layouts and archives a pull opened, to close when it
// ends. Safe for concurrent use.
type closers struct {
	mu sync.Mutex
	c  []io.Closer
}

func (c *closers) add(x io.Closer) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.c = append(c.c, x)
}

// Close closes them all.
func (c *closers) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	var errs []error
	for _, x := range c.c {
		errs = append(errs, x.Close())
	}
	c.c = nil
	return errors.Join(errs...)
}
