package imo

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
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
	node    manifestNode
}

// findReferrers returns the artifacts that refer to img or to any of its
// child manifests, in a fixed order: by subject, then by reference. They
// come from img's repository: cosign's tags, then the referrers API or its
// tag fallback.
func (i *Incremental) findReferrers(ctx context.Context, img pulledImage) ([]pulledImage, error) {
	repo, c := img.ref.Context(), img.client
	var mu sync.Mutex
	var found []referrer
	add := func(r referrer) {
		mu.Lock()
		defer mu.Unlock()
		found = append(found, r)
	}
	eg, ectx := errgroup.WithContext(ctx)
	eg.SetLimit(i.opts.jobs)
	for order, m := range img.graph.manifests {
		subject := m.desc.Digest
		for _, suffix := range cosignSuffixes {
			eg.Go(func() error {
				tag := cosignTag(repo, subject, suffix)
				d, err := c.getIfExists(ectx, tag)
				if err != nil || d == nil {
					return err
				}
				add(referrer{ref: tag, subject: subject, order: order, node: manifestNode{desc: v1.Descriptor{MediaType: d.MediaType, Digest: d.Digest, Size: d.Size}, raw: d.Manifest}})
				return nil
			})
		}
		eg.Go(func() error {
			idx, err := remote.Referrers(repo.Digest(subject.String()), c.options(ectx)...)
			if err != nil {
				return fmt.Errorf("listing the referrers of %s@%s: %w", repo, subject, answer(err))
			}
			im, err := idx.IndexManifest()
			if err != nil {
				return fmt.Errorf("listing the referrers of %s@%s: %w", repo, subject, err)
			}
			for _, d := range im.Manifests {
				desc := v1.Descriptor{MediaType: d.MediaType, Digest: d.Digest, Size: d.Size}
				raw, err := c.manifest(ectx, desc)
				if err != nil {
					return fmt.Errorf("fetching referrer %s of %s@%s: %w", d.Digest, repo, subject, err)
				}
				add(referrer{ref: repo.Digest(d.Digest.String()), subject: subject, order: order, node: manifestNode{desc: desc, raw: raw}})
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
		g, err := walkImage(ctx, r.node, c.manifest, repo.String(), i.opts.jobs)
		if err != nil {
			return nil, fmt.Errorf("reading manifests of %s: %w", r.ref, err)
		}
		out = append(out, pulledImage{ref: r.ref, graph: g, client: c, subject: r.subject})
	}
	return out, nil
}

// getIfExists is get, returning nil when the registry has no such
// manifest.
func (c *repoClient) getIfExists(ctx context.Context, ref name.Reference) (*remote.Descriptor, error) {
	d, err := c.get(ctx, ref)
	var te *transport.Error
	if errors.As(err, &te) && te.StatusCode == http.StatusNotFound {
		return nil, nil
	}
	return d, err
}
