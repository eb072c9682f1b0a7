package imo

import (
	"context"
	"fmt"
	"sync"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/imokit/imo/archive"
	"github.com/imokit/imo/internal/graph"
	"github.com/imokit/imo/internal/reference"
	"golang.org/x/sync/errgroup"
)

// Resolve fetches the manifests of every final and base image of images
// (one [Pair], or a [Bundle]) and decides what the archive carries: every
// manifest and config of the final images, and each layer that the base of
// some image using it lacks (with [WithHave], and that no inventory lists).
// It downloads no blob, but for what deciding on sub-layer deltas needs
// when [WithSublayerDeltas] is set (the bases' layers and the changed
// layers). Each distinct base is resolved once; up to [WithJobs] images
// resolve at once.
//
// The [Difference] it returns tells the plan and writes the archive; Close
// it when done.
func (i *Incremental) Resolve(ctx context.Context, images Images) (*Difference, error) {
	if i.err != nil {
		return nil, i.err
	}
	opened := &closers{}
	d, err := i.resolve(ctx, images.pairs(), images.bundle(), opened)
	if err != nil {
		i.closeIdle()
		opened.Close()
		return nil, err
	}
	return d, nil
}

// pairRefs is where a pair's images live; base is nil for scratch.
type pairRefs struct {
	base  *reference.Location
	final reference.Location
}

// resolve resolves pairs; the layouts and archives it reads are added to
// opened.
func (i *Incremental) resolve(ctx context.Context, pairs []Pair, bundle bool, opened *closers) (*Difference, error) {
	refs, err := i.parsePairs(pairs)
	if err != nil {
		return nil, err
	}
	finals, err := i.fetchImages(ctx, refs, opened)
	if err != nil {
		return nil, err
	}
	d := &Difference{i: i, source: map[v1.Hash]int{}, opened: opened}
	var planned []archive.PlanImage
	var uses []imageBlobs
	for n, final := range finals {
		base := archive.ImageRef{Reference: Scratch}
		layers := map[v1.Hash]bool{}
		if final.base != nil {
			base = archive.ImageRef{Reference: pairs[n].Base, Digest: final.base.graph.Top().Desc.Digest}
			for _, b := range final.base.graph.Blobs {
				if !b.Config {
					layers[b.Desc.Digest] = true
				}
			}
		}
		found := []pulledImage{final}
		if i.opts.referrers {
			artifacts, err := i.findReferrers(ctx, final)
			if err != nil {
				return nil, err
			}
			found = append(found, artifacts...)
		}
		for k, f := range found {
			called := pairs[n].Final
			if k > 0 {
				called = f.name
			}
			pi := archive.NewPlanImage(archive.ImageRef{Reference: called, Digest: f.graph.Top().Desc.Digest}, base, f.graph.Descriptors())
			pi.Subject = f.subject
			planned = append(planned, pi)
			used := map[v1.Hash]bool{}
			for _, b := range f.graph.Blobs {
				used[b.Desc.Digest] = true
			}
			uses = append(uses, imageBlobs{uses: used, base: layers})
			d.images = append(d.images, f)
		}
	}
	graphs := make([]*graph.Graph, len(d.images))
	for n, img := range d.images {
		graphs[n] = img.graph
		for _, b := range img.graph.Blobs {
			if _, ok := d.source[b.Desc.Digest]; !ok {
				d.source[b.Desc.Digest] = n
			}
		}
	}
	d.all = graph.Merge(graphs)
	d.plan = &archive.Plan{Version: archive.PlanVersion, Images: planned, Blobs: leaveOut(d.all.Blobs, uses, i.opts.have, i.opts.sent), Bundle: bundle}
	if i.opts.signer != nil {
		d.plan.Signer = archive.Fingerprint(i.opts.signer.Public())
	}
	for _, s := range i.opts.sent {
		d.plan.Sent = append(d.plan.Sent, s.PlanSent)
	}
	for _, inv := range i.opts.have {
		d.plan.Inventories = append(d.plan.Inventories, archive.PlanInventory{Registry: inv.Registry, Prefix: inv.Prefix, Taken: inv.Taken, Blobs: len(inv.Blobs)})
	}
	if i.opts.sublayer {
		if err := d.prepareDeltas(ctx); err != nil {
			d.Close()
			return nil, err
		}
	}
	return d, nil
}

// parsePairs parses every reference of pairs before anything is fetched.
func (i *Incremental) parsePairs(pairs []Pair) ([]pairRefs, error) {
	if len(pairs) == 0 {
		return nil, fmt.Errorf("%w: no image to pull", ErrInvalidPairs)
	}
	refs := make([]pairRefs, len(pairs))
	seen := map[string]bool{}
	for n, p := range pairs {
		where := ""
		if len(pairs) > 1 {
			where = fmt.Sprintf(" of pair %d", n+1)
		}
		if err := p.Check(); err != nil {
			return nil, fmt.Errorf("%w: pair %d: %v", ErrInvalidPairs, n+1, err)
		}
		var err error
		if refs[n].final, err = i.parseLocation(p.Final); err != nil {
			return nil, fmt.Errorf("final image%s: %w", where, err)
		}
		if seen[refs[n].final.String()] {
			return nil, fmt.Errorf("%w: final image %s is listed twice", ErrInvalidPairs, p.Final)
		}
		seen[refs[n].final.String()] = true
		if p.Base != Scratch {
			base, err := i.parseLocation(p.Base)
			if err != nil {
				return nil, fmt.Errorf("base image%s: %w", where, err)
			}
			refs[n].base = &base
		}
	}
	return refs, nil
}

// fetchImages resolves every pair's final image, keeping only the
// platforms asked for, and each distinct base once, up to WithJobs at
// once; each final image returned points at its base.
func (i *Incremental) fetchImages(ctx context.Context, refs []pairRefs, opened *closers) ([]pulledImage, error) {
	finals := make([]pulledImage, len(refs))
	bases := map[string]*pulledImage{}
	var mu sync.Mutex
	eg, ectx := errgroup.WithContext(ctx)
	eg.SetLimit(i.opts.jobs)
	for n, r := range refs {
		eg.Go(func() error {
			img, err := i.fetchImage(ectx, i.final, r.final, i.opts.platforms, opened)
			finals[n] = img
			return err
		})
		if r.base == nil {
			continue
		}
		mu.Lock()
		_, started := bases[r.base.String()]
		base := &pulledImage{}
		if !started {
			bases[r.base.String()] = base
		}
		mu.Unlock()
		if !started {
			eg.Go(func() error {
				img, err := i.fetchImage(ectx, i.base, *r.base, nil, opened)
				*base = img
				return err
			})
		}
	}
	if err := eg.Wait(); err != nil {
		return nil, err
	}
	for n, r := range refs {
		if r.base != nil {
			finals[n].base = bases[r.base.String()]
		}
	}
	return finals, nil
}

// parseLocation parses where an image the caller named lives, as
// [reference.ParseLocation] does, marking a registry for plain HTTP when
// asked. Errors wrap [ErrInvalidReference] and say what is wrong.
func (i *Incremental) parseLocation(s string) (reference.Location, error) {
	l, err := reference.ParseLocation(s, i.final.NameOptions()...)
	if err != nil {
		return reference.Location{}, fmt.Errorf("%w: %q: %v", ErrInvalidReference, s, err)
	}
	return l, nil
}
