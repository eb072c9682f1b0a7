package imo

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"slices"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/imokit/imo/internal/graph"
	"github.com/imokit/imo/internal/reference"
	"github.com/imokit/imo/internal/registry"
)

// fetcher reads an image's manifests and blobs, each checked against its
// descriptor: what choosing a platform needs of where the image lives.
type fetcher interface {
	graph.Fetcher
	graph.BlobFetcher
}

// resolveRef fetches the manifest r names. When r names both a tag and a
// digest, the digest is fetched and the tag must point at it.
func resolveRef(ctx context.Context, repo *registry.Repository, r reference.Ref) (graph.Node, error) {
	top, err := repo.Get(ctx, r.Fetch())
	if err != nil || r.Tag == "" || r.Digest == "" {
		return top, err
	}
	tag := r.Repo.Tag(r.Tag)
	d, err := repo.Head(ctx, tag)
	if err != nil {
		return graph.Node{}, fmt.Errorf("checking the tag of %s: %w", r, err)
	}
	if d.Digest.String() != r.Digest {
		return graph.Node{}, fmt.Errorf("%s: the tag %s points at %s, not at the digest the reference names", r, tag, d.Digest)
	}
	return top, nil
}

// selectPlatforms narrows top to the manifests matching platforms: the
// matching child itself when one matches, a new index of the matches when
// several do.
func selectPlatforms(ctx context.Context, src fetcher, name string, top graph.Node, platforms []v1.Platform) (graph.Node, error) {
	idx, matched, err := matchPlatforms(ctx, src, name, top, platforms)
	if err != nil || idx == nil {
		return top, err
	}
	if len(matched) == 1 {
		raw, err := src.Manifest(ctx, matched[0])
		return graph.Node{Desc: matched[0], Raw: raw}, err
	}
	idx.Manifests = matched
	raw, err := json.Marshal(idx)
	if err != nil {
		return top, err
	}
	h, size, err := v1.SHA256(bytes.NewReader(raw))
	if err != nil {
		return top, err
	}
	return graph.Node{Desc: v1.Descriptor{MediaType: top.Desc.MediaType, Digest: h, Size: size}, Raw: raw}, nil
}

// matchPlatforms returns the descriptors of top, an index, that match one
// of platforms, and the parsed index; for a single image it checks the
// image's platform and returns no index. Matching nothing is a
// [*PlatformError].
func matchPlatforms(ctx context.Context, src fetcher, name string, top graph.Node, platforms []v1.Platform) (*v1.IndexManifest, []v1.Descriptor, error) {
	wanted := platformStrings(platforms)
	if !top.Desc.MediaType.IsIndex() {
		p, err := imagePlatform(ctx, src, name, top)
		if err != nil {
			return nil, nil, err
		}
		for _, w := range platforms {
			if platformMatches(w, p) {
				return nil, nil, nil
			}
		}
		return nil, nil, &PlatformError{Image: name, Wanted: wanted, Available: []string{p.String()}}
	}
	idx, err := v1.ParseIndexManifest(bytes.NewReader(top.Raw))
	if err != nil {
		return nil, nil, fmt.Errorf("parsing index %s: %w", name, err)
	}
	var matched []v1.Descriptor
	var available []string
	for _, d := range idx.Manifests {
		if d.Platform == nil {
			continue
		}
		if p := d.Platform.String(); !slices.Contains(available, p) {
			available = append(available, p)
		}
		for _, w := range platforms {
			if platformMatches(w, *d.Platform) {
				matched = append(matched, d)
				break
			}
		}
	}
	if len(matched) == 0 {
		return nil, nil, &PlatformError{Image: name, Wanted: wanted, Available: available}
	}
	return idx, matched, nil
}

// imagePlatform reads the platform of a single image from its config.
func imagePlatform(ctx context.Context, src fetcher, name string, n graph.Node) (v1.Platform, error) {
	m, err := v1.ParseManifest(bytes.NewReader(n.Raw))
	if err != nil {
		return v1.Platform{}, fmt.Errorf("parsing manifest %s: %w", n.Desc.Digest, err)
	}
	if m.Config.Size > graph.MaxManifestSize {
		return v1.Platform{}, fmt.Errorf("%w: config %s of %s declares %d bytes, more than the %d allowed", ErrInvalidManifest, m.Config.Digest, name, m.Config.Size, graph.MaxManifestSize)
	}
	rc, err := src.Blob(ctx, m.Config, nil)
	if err != nil {
		return v1.Platform{}, err
	}
	defer rc.Close()
	raw, err := io.ReadAll(rc) // to the end, where the digest is checked
	if err != nil {
		return v1.Platform{}, fmt.Errorf("reading config %s of %s: %w", m.Config.Digest, name, err)
	}
	cf, err := v1.ParseConfigFile(bytes.NewReader(raw))
	if err != nil {
		return v1.Platform{}, fmt.Errorf("parsing config %s of %s: %w", m.Config.Digest, name, err)
	}
	if p := cf.Platform(); p != nil {
		return *p, nil
	}
	return v1.Platform{}, nil
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
