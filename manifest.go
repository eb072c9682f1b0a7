package imo

import (
	"context"
	"fmt"
	"runtime"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
)

// ManifestKind selects the manifest [Incremental.Manifest] returns.
type ManifestKind int

const (
	// ManifestAsServed is what the registry serves for the reference: an
	// index for a multi-platform image, an image manifest otherwise.
	ManifestAsServed ManifestKind = iota
	// ManifestList is the index (image list) of a multi-platform image; a
	// single-platform image has none, which is an error.
	ManifestList
	// ManifestImage is an image manifest: of the one platform given to
	// [WithPlatforms], or of this machine's platform by default, when the
	// reference names an index. Several platforms, or several manifests
	// of the index matching the platform, are an error: there is no
	// single manifest to return.
	ManifestImage
)

// Manifest fetches a manifest of ref from its registry, with the final
// image's credentials and transport options, and returns its descriptor and
// exact bytes.
func (i *Incremental) Manifest(ctx context.Context, ref string, kind ManifestKind) (v1.Descriptor, []byte, error) {
	if i.err != nil {
		return v1.Descriptor{}, nil, i.err
	}
	if kind == ManifestImage && len(i.opts.platforms) > 1 {
		return v1.Descriptor{}, nil, fmt.Errorf("%w: ManifestImage shows one platform's manifest, but WithPlatforms gave %d", ErrInvalidOption, len(i.opts.platforms))
	}
	defer i.pull.closeIdle()
	r, err := i.parseRef(ref, i.opts.plainPull)
	if err != nil {
		return v1.Descriptor{}, nil, err
	}
	c, err := newRepoClient(ctx, r.repo, i.pull, i.opts.finalAuth, i.opts.keychain, i.opts.retry, []string{r.repo.Scope(transport.PullScope)})
	if err != nil {
		return v1.Descriptor{}, nil, err
	}
	top, err := c.resolve(ctx, r)
	if err != nil {
		return v1.Descriptor{}, nil, err
	}
	switch {
	case kind == ManifestList && !top.desc.MediaType.IsIndex():
		return v1.Descriptor{}, nil, fmt.Errorf("%s is a single-platform image (%s): it has no image list manifest", ref, top.desc.MediaType)
	case kind == ManifestImage && top.desc.MediaType.IsIndex():
		p := v1.Platform{OS: runtime.GOOS, Architecture: runtime.GOARCH}
		if len(i.opts.platforms) > 0 {
			p = i.opts.platforms[0]
		}
		_, matched, err := matchPlatforms(ctx, c, r.fetch(), top, []v1.Platform{p})
		if err != nil {
			return v1.Descriptor{}, nil, err
		}
		if len(matched) > 1 {
			var found []string
			for _, d := range matched {
				found = append(found, d.Digest.String())
			}
			return v1.Descriptor{}, nil, fmt.Errorf("%s has %d image manifests for %s (%s): there is no single one to show; name one by digest", ref, len(matched), p, strings.Join(found, ", "))
		}
		raw, err := c.manifest(ctx, matched[0])
		if err != nil {
			return v1.Descriptor{}, nil, err
		}
		return matched[0], raw, nil
	}
	return top.desc, top.raw, nil
}
