package imo

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/imokit/imo/internal/graph"
	"golang.org/x/sync/errgroup"
)

// cosignSuffixes end the tags under which cosign stores what it attaches
// to the manifest sha256:HEX: tags sha256-HEX.sig, .att and .sbom.
var cosignSuffixes = []string{".sig", ".att", ".sbom"}

// cosignTag is the tag cosign uses for what it attaches to subject.
func cosignTag(repo name.Repository, subject v1.Hash, suffix string) name.Tag {
	return repo.Tag(subject.Algorithm + "-" + subject.Hex + suffix)
}

// referrer is an artifact found referring to a manifest of an image.
type referrer struct {
	ref     name.Reference // its cosign tag, or its digest for an OCI referrer
	subject v1.Hash
	order   int // the subject's position among the image's manifests
	node    graph.Node
}

// findReferrers returns the artifacts that refer to img or to any of its
// child manifests, in a fixed order: by subject, then by reference. They
// come from img's repository: cosign's tags, then the referrers API or its
// tag fallback. An image read from a layout or archive has none: they
// are looked for in registries only.
func (i *Incremental) findReferrers(ctx context.Context, img pulledImage) ([]pulledImage, error) {
	repo := img.repo
	if repo == nil {
		return nil, nil
	}
	var mu sync.Mutex
	var found []referrer
	add := func(r referrer) {
		mu.Lock()
		defer mu.Unlock()
		found = append(found, r)
	}
	eg, ectx := errgroup.WithContext(ctx)
	eg.SetLimit(i.opts.jobs)
	for order, m := range img.graph.Manifests {
		subject := m.Desc.Digest
		for _, suffix := range cosignSuffixes {
			eg.Go(func() error {
				tag := cosignTag(repo.Name(), subject, suffix)
				n, err := repo.GetIfExists(ectx, tag)
				if err != nil || n == nil {
					return err
				}
				add(referrer{ref: tag, subject: subject, order: order, node: *n})
				return nil
			})
		}
		eg.Go(func() error {
			descs, err := repo.Referrers(ectx, subject)
			if err != nil {
				return err
			}
			for _, d := range descs {
				desc := v1.Descriptor{MediaType: d.MediaType, Digest: d.Digest, Size: d.Size}
				raw, err := repo.Manifest(ectx, desc)
				if err != nil {
					return fmt.Errorf("fetching referrer %s of %s@%s: %w", d.Digest, repo.Name(), subject, err)
				}
				add(referrer{ref: repo.Name().Digest(d.Digest.String()), subject: subject, order: order, node: graph.Node{Desc: desc, Raw: raw}})
			}
			return nil
		})
	}
	if err := eg.Wait(); err != nil {
		return nil, err
	}
	slices.SortFunc(found, func(a, b referrer) int {
		if a.order != b.order {
			return a.order - b.order
		}
		return strings.Compare(a.ref.String(), b.ref.String())
	})
	var out []pulledImage
	for _, r := range found {
		g, err := graph.Walk(ctx, r.node, repo, repo.Name().String(), i.opts.jobs)
		if err != nil {
			return nil, fmt.Errorf("reading manifests of %s: %w", r.ref, err)
		}
		out = append(out, pulledImage{name: r.ref.String(), ref: r.ref, graph: g, src: repo, repo: repo, subject: r.subject})
	}
	return out, nil
}
