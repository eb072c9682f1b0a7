package imo

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"slices"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"golang.org/x/sync/errgroup"
)

// manifestSource returns the exact bytes of the manifest desc names.
type manifestSource func(ctx context.Context, desc v1.Descriptor) ([]byte, error)

// manifestNode is a manifest with its exact bytes.
type manifestNode struct {
	desc v1.Descriptor
	raw  []byte
}

// blobUse is a config or layer and the manifests that reference it.
type blobUse struct {
	desc     v1.Descriptor
	config   bool
	neededBy []string
}

// reasonForeign is why a non-distributable layer is left out.
const reasonForeign = "non-distributable: fetched from its URLs by whoever runs the image"

// foreign reports whether b is a non-distributable layer (a Windows base
// layer, say), which registries do not hold and imo neither carries nor
// expects at the destination.
func (b *blobUse) foreign() bool { return !b.config && !b.desc.MediaType.IsDistributable() }

// imageGraph is everything one image references: its manifests (the top
// one first, children in index order, each once) and its blobs, each once,
// in the order the manifests first reference them.
type imageGraph struct {
	manifests []manifestNode
	blobs     []*blobUse
	byDigest  map[v1.Hash]*blobUse
	seen      map[v1.Hash]bool
}

// Limits on a manifest tree, so that a hostile registry or archive cannot
// make imo walk without end: real images have one index level and tens of
// manifests.
const (
	maxManifests = 10_000
	maxDepth     = 8
)

func (g *imageGraph) top() manifestNode { return g.manifests[0] }

// walker reads manifest trees from one source.
type walker struct {
	src    manifestSource
	source string // where the manifests come from, for errors
	jobs   int
}

// walkImage reads the manifest tree under top, fetching children from src
// with up to jobs requests at once. Every manifest is checked against its
// descriptor; source names where they come from.
func walkImage(ctx context.Context, top manifestNode, src manifestSource, source string, jobs int) (*imageGraph, error) {
	g := &imageGraph{byDigest: map[v1.Hash]*blobUse{}, seen: map[v1.Hash]bool{}}
	w := walker{src: src, source: source, jobs: jobs}
	if err := w.add(ctx, g, top, 0); err != nil {
		return nil, err
	}
	return g, nil
}

func (w walker) add(ctx context.Context, g *imageGraph, n manifestNode, depth int) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	switch {
	case depth > maxDepth:
		return fmt.Errorf("%w: %s: indexes nest more than %d deep", ErrInvalidManifest, n.desc.Digest, maxDepth)
	case len(g.manifests) >= maxManifests:
		return fmt.Errorf("%w: the image has more than %d manifests", ErrInvalidManifest, maxManifests)
	}
	if err := checkManifest(n, w.source); err != nil {
		return err
	}
	g.seen[n.desc.Digest] = true
	n.desc.MediaType = manifestMediaType(n)
	g.manifests = append(g.manifests, n)
	switch {
	case n.desc.MediaType.IsIndex():
		idx, err := v1.ParseIndexManifest(bytes.NewReader(n.raw))
		if err != nil {
			return fmt.Errorf("%w: index %s from %s does not parse: %w", ErrInvalidManifest, n.desc.Digest, w.source, err)
		}
		var todo []v1.Descriptor
		for _, d := range idx.Manifests {
			if !g.seen[d.Digest] {
				g.seen[d.Digest] = true
				todo = append(todo, d)
			}
		}
		children := make([]manifestNode, len(todo))
		eg, ectx := errgroup.WithContext(ctx)
		eg.SetLimit(w.jobs)
		for i, d := range todo {
			eg.Go(func() error {
				raw, err := w.src(ectx, d)
				children[i] = manifestNode{desc: d, raw: raw}
				return err
			})
		}
		if err := eg.Wait(); err != nil {
			return err
		}
		for _, c := range children {
			if err := w.add(ctx, g, c, depth+1); err != nil {
				return err
			}
		}
	case n.desc.MediaType.IsImage():
		m, err := v1.ParseManifest(bytes.NewReader(n.raw))
		if err != nil {
			return fmt.Errorf("%w: manifest %s from %s does not parse: %w", ErrInvalidManifest, n.desc.Digest, w.source, err)
		}
		user := n.desc.Digest.String()
		if n.desc.Platform != nil {
			user = n.desc.Platform.String() + " " + user
		}
		g.use(m.Config, true, user)
		for _, l := range m.Layers {
			g.use(l, false, user)
		}
	case n.desc.MediaType.IsSchema1():
		return fmt.Errorf("%w: %s from %s is Docker schema 1, which registries have deprecated; push it again as schema 2", ErrUnsupportedMediaType, n.desc.Digest, w.source)
	default:
		return fmt.Errorf("%w: %s from %s has media type %q", ErrUnsupportedMediaType, n.desc.Digest, w.source, n.desc.MediaType)
	}
	return nil
}

func (g *imageGraph) use(d v1.Descriptor, config bool, user string) {
	if u, ok := g.byDigest[d.Digest]; ok {
		u.config = u.config || config
		if !slices.Contains(u.neededBy, user) {
			u.neededBy = append(u.neededBy, user)
		}
		return
	}
	u := &blobUse{desc: v1.Descriptor{MediaType: d.MediaType, Digest: d.Digest, Size: d.Size}, config: config, neededBy: []string{user}}
	g.byDigest[d.Digest] = u
	g.blobs = append(g.blobs, u)
}

// mergeGraphs returns the graph of several images: every manifest and
// blob once, in the order the images first reference them.
func mergeGraphs(gs []*imageGraph) *imageGraph {
	if len(gs) == 1 {
		return gs[0]
	}
	m := &imageGraph{byDigest: map[v1.Hash]*blobUse{}, seen: map[v1.Hash]bool{}}
	for _, g := range gs {
		for _, n := range g.manifests {
			if !m.seen[n.desc.Digest] {
				m.seen[n.desc.Digest] = true
				m.manifests = append(m.manifests, n)
			}
		}
		for _, b := range g.blobs {
			u, ok := m.byDigest[b.desc.Digest]
			if !ok {
				u = &blobUse{desc: b.desc}
				m.byDigest[b.desc.Digest] = u
				m.blobs = append(m.blobs, u)
			}
			u.config = u.config || b.config
			for _, user := range b.neededBy {
				if !slices.Contains(u.neededBy, user) {
					u.neededBy = append(u.neededBy, user)
				}
			}
		}
	}
	return m
}

// checkManifest verifies a manifest's bytes, read from source, against its
// descriptor.
func checkManifest(n manifestNode, source string) error {
	if n.desc.Size != int64(len(n.raw)) {
		return &DigestMismatchError{Source: source, Want: n.desc.Digest, WantSize: n.desc.Size, GotSize: int64(len(n.raw))}
	}
	got, _, err := v1.SHA256(bytes.NewReader(n.raw))
	if err != nil {
		return err
	}
	if got != n.desc.Digest {
		return &DigestMismatchError{Source: source, Want: n.desc.Digest, WantSize: n.desc.Size, Got: got, GotSize: n.desc.Size}
	}
	return nil
}

// manifestMediaType is the descriptor's media type, or, where the descriptor
// has none, the one the manifest declares or its shape implies.
func manifestMediaType(n manifestNode) types.MediaType {
	if n.desc.MediaType != "" {
		return n.desc.MediaType
	}
	var probe struct {
		MediaType types.MediaType `json:"mediaType"`
		Manifests json.RawMessage `json:"manifests"`
	}
	if json.Unmarshal(n.raw, &probe) != nil {
		return ""
	}
	switch {
	case probe.MediaType != "":
		return probe.MediaType
	case probe.Manifests != nil:
		return types.OCIImageIndex
	}
	return types.OCIManifestSchema1
}

// platformMatches reports whether have satisfies want: equal OS and
// architecture, and equal variant and OS version where want names them.
func platformMatches(want, have v1.Platform) bool {
	return want.OS == have.OS && want.Architecture == have.Architecture &&
		(want.Variant == "" || want.Variant == have.Variant) &&
		(want.OSVersion == "" || want.OSVersion == have.OSVersion)
}

func platformStrings(ps []v1.Platform) []string {
	out := make([]string, len(ps))
	for i, p := range ps {
		out[i] = p.String()
	}
	return out
}
