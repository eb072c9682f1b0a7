// Package graph reads the manifest graph of an image: its manifests, the
// top one first, and every config and layer they reference, each once,
// with the manifests that need it. It reads manifests through a [Fetcher],
// which a registry repository and an archive both are, and checks each
// against its descriptor.
package graph

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/imokit/imo/internal/verify"
	"golang.org/x/sync/errgroup"
)

// Errors of manifests that cannot be walked.
var (
	// ErrInvalidManifest means a manifest or index does not parse, or its
	// tree is beyond the limits (more than MaxManifests manifests, or
	// indexes nested more than MaxDepth deep).
	ErrInvalidManifest = errors.New("invalid manifest")

	// ErrUnsupportedMediaType means a manifest has a media type imo cannot
	// carry, such as Docker schema 1.
	ErrUnsupportedMediaType = errors.New("unsupported manifest media type")
)

// Limits on a manifest tree, so that a hostile registry or archive cannot
// make imo walk without end or allocate at will: real images have one
// index level, tens of manifests, and manifests of kilobytes.
const (
	MaxManifests    = 10_000
	MaxDepth        = 8
	MaxManifestSize = 8 << 20
)

// Fetcher returns the exact bytes of the manifest desc names, checked
// against desc.
type Fetcher interface {
	Manifest(ctx context.Context, desc v1.Descriptor) ([]byte, error)
}

// BlobFetcher streams the blob desc names, verified against desc as it is
// read; report, when not nil, is told the running byte count.
type BlobFetcher interface {
	Blob(ctx context.Context, desc v1.Descriptor, report func(int64)) (io.ReadCloser, error)
}

// Node is a manifest with its exact bytes.
type Node struct {
	Desc v1.Descriptor
	Raw  []byte
}

// Blob is a config or layer and the manifests that reference it.
type Blob struct {
	Desc   v1.Descriptor
	Config bool
	// NeededBy names the manifests that reference the blob: their digests,
	// after their platform where the manifest is part of an index.
	NeededBy []string
}

// Foreign reports whether b is a non-distributable layer (a Windows base
// layer, say), which registries do not hold and imo neither carries nor
// expects at the destination.
func (b *Blob) Foreign() bool { return !b.Config && !b.Desc.MediaType.IsDistributable() }

// Graph is everything one image references: its manifests (the top one
// first, children in index order, each once) and its blobs, each once, in
// the order the manifests first reference them.
type Graph struct {
	Manifests []Node
	Blobs     []*Blob
	byDigest  map[v1.Hash]*Blob
	seen      map[v1.Hash]bool
}

func newGraph() *Graph {
	return &Graph{byDigest: map[v1.Hash]*Blob{}, seen: map[v1.Hash]bool{}}
}

// Top is the image's top manifest.
func (g *Graph) Top() Node { return g.Manifests[0] }

// Blob returns the config or layer h, and whether the image uses it.
func (g *Graph) Blob(h v1.Hash) (*Blob, bool) {
	b, ok := g.byDigest[h]
	return b, ok
}

// HasManifest reports whether h is one of the image's manifests.
func (g *Graph) HasManifest(h v1.Hash) bool { return g.seen[h] }

// Descriptors are the descriptors of the image's manifests, top first,
// with their platforms.
func (g *Graph) Descriptors() []v1.Descriptor {
	out := make([]v1.Descriptor, len(g.Manifests))
	for k, m := range g.Manifests {
		out[k] = v1.Descriptor{MediaType: m.Desc.MediaType, Digest: m.Desc.Digest, Size: m.Desc.Size, Platform: m.Desc.Platform}
	}
	return out
}

// walker reads manifest trees from one source.
type walker struct {
	src    Fetcher
	source string // where the manifests come from, for errors
	jobs   int
}

// Walk reads the manifest tree under top, fetching children from src with
// up to jobs requests at once. Every manifest is checked against its
// descriptor; source names where they come from, for errors.
func Walk(ctx context.Context, top Node, src Fetcher, source string, jobs int) (*Graph, error) {
	g := newGraph()
	w := walker{src: src, source: source, jobs: jobs}
	if err := w.add(ctx, g, top, 0); err != nil {
		return nil, err
	}
	return g, nil
}

// WalkAll reads the manifest tree of each descriptor of tops, in order,
// one request at a time, as from an archive's index.
func WalkAll(ctx context.Context, tops []v1.Descriptor, src Fetcher, source string) ([]*Graph, error) {
	var gs []*Graph
	for _, d := range tops {
		raw, err := src.Manifest(ctx, d)
		if err != nil {
			return nil, err
		}
		desc := v1.Descriptor{MediaType: d.MediaType, Digest: d.Digest, Size: d.Size, Platform: d.Platform}
		g, err := Walk(ctx, Node{Desc: desc, Raw: raw}, src, source, 1)
		if err != nil {
			return nil, err
		}
		gs = append(gs, g)
	}
	return gs, nil
}

func (w walker) add(ctx context.Context, g *Graph, n Node, depth int) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	switch {
	case depth > MaxDepth:
		return fmt.Errorf("%w: %s: indexes nest more than %d deep", ErrInvalidManifest, n.Desc.Digest, MaxDepth)
	case len(g.Manifests) >= MaxManifests:
		return fmt.Errorf("%w: the image has more than %d manifests", ErrInvalidManifest, MaxManifests)
	}
	if err := verify.Bytes(n.Raw, n.Desc, w.source); err != nil {
		return err
	}
	g.seen[n.Desc.Digest] = true
	n.Desc.MediaType = MediaType(n)
	g.Manifests = append(g.Manifests, n)
	switch {
	case n.Desc.MediaType.IsIndex():
		return w.children(ctx, g, n, depth)
	case n.Desc.MediaType.IsImage():
		m, err := v1.ParseManifest(bytes.NewReader(n.Raw))
		if err != nil {
			return fmt.Errorf("%w: manifest %s from %s does not parse: %w", ErrInvalidManifest, n.Desc.Digest, w.source, err)
		}
		user := n.Desc.Digest.String()
		if n.Desc.Platform != nil {
			user = n.Desc.Platform.String() + " " + user
		}
		g.use(m.Config, true, user)
		for _, l := range m.Layers {
			g.use(l, false, user)
		}
		return nil
	case n.Desc.MediaType.IsSchema1():
		return fmt.Errorf("%w: %s from %s is Docker schema 1, which registries have deprecated; push it again as schema 2", ErrUnsupportedMediaType, n.Desc.Digest, w.source)
	}
	return fmt.Errorf("%w: %s from %s has media type %q", ErrUnsupportedMediaType, n.Desc.Digest, w.source, n.Desc.MediaType)
}

// children fetches the children of the index n that the graph does not
// hold yet, up to jobs at once, and adds them in index order.
func (w walker) children(ctx context.Context, g *Graph, n Node, depth int) error {
	idx, err := v1.ParseIndexManifest(bytes.NewReader(n.Raw))
	if err != nil {
		return fmt.Errorf("%w: index %s from %s does not parse: %w", ErrInvalidManifest, n.Desc.Digest, w.source, err)
	}
	var todo []v1.Descriptor
	for _, d := range idx.Manifests {
		if !g.seen[d.Digest] {
			g.seen[d.Digest] = true
			todo = append(todo, d)
		}
	}
	children := make([]Node, len(todo))
	eg, ectx := errgroup.WithContext(ctx)
	eg.SetLimit(w.jobs)
	for i, d := range todo {
		eg.Go(func() error {
			raw, err := w.src.Manifest(ectx, d)
			children[i] = Node{Desc: d, Raw: raw}
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
	return nil
}

func (g *Graph) use(d v1.Descriptor, config bool, user string) {
	if u, ok := g.byDigest[d.Digest]; ok {
		u.Config = u.Config || config
		if !slices.Contains(u.NeededBy, user) {
			u.NeededBy = append(u.NeededBy, user)
		}
		return
	}
	u := &Blob{Desc: v1.Descriptor{MediaType: d.MediaType, Digest: d.Digest, Size: d.Size}, Config: config, NeededBy: []string{user}}
	g.byDigest[d.Digest] = u
	g.Blobs = append(g.Blobs, u)
}

// Merge returns the graph of several images: every manifest and blob once,
// in the order the images first reference them.
func Merge(gs []*Graph) *Graph {
	if len(gs) == 1 {
		return gs[0]
	}
	m := newGraph()
	for _, g := range gs {
		for _, n := range g.Manifests {
			if !m.seen[n.Desc.Digest] {
				m.seen[n.Desc.Digest] = true
				m.Manifests = append(m.Manifests, n)
			}
		}
		for _, b := range g.Blobs {
			u, ok := m.byDigest[b.Desc.Digest]
			if !ok {
				u = &Blob{Desc: b.Desc}
				m.byDigest[b.Desc.Digest] = u
				m.Blobs = append(m.Blobs, u)
			}
			u.Config = u.Config || b.Config
			for _, user := range b.NeededBy {
				if !slices.Contains(u.NeededBy, user) {
					u.NeededBy = append(u.NeededBy, user)
				}
			}
		}
	}
	return m
}

// MediaType is the descriptor's media type, or, where the descriptor has
// none, the one the manifest declares or its shape implies.
func MediaType(n Node) types.MediaType {
	if n.Desc.MediaType != "" {
		return n.Desc.MediaType
	}
	var probe struct {
		MediaType types.MediaType `json:"mediaType"`
		Manifests json.RawMessage `json:"manifests"`
	}
	if json.Unmarshal(n.Raw, &probe) != nil {
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
