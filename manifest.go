package imo

import (
	"context"
	"fmt"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// Manifest fetches a manifest of ref, from its registry (with the final
// image's credentials and transport options) or from the layout or archive
// it names (oci:, oci-archive:, docker-archive:, as for a pull), and
// returns its descriptor and exact bytes. With a nil platform it is what
// the registry serves for ref, or the layout lists;
// with one, when ref names an index, it is the image manifest of that
// platform, which must be the only one of the index to match it (a
// buildx index's attestations all match unknown/unknown, say); a single
// image is returned as it is.
func (i *Incremental) Manifest(ctx context.Context, ref string, platform *v1.Platform) (v1.Descriptor, []byte, error) {
	if i.err != nil {
		return v1.Descriptor{}, nil, i.err
	}
	defer i.closeIdle()
	loc, err := i.parseLocation(ref)
	if err != nil {
		return v1.Descriptor{}, nil, err
	}
	opened := &closers{}
	defer opened.Close()
	img, top, err := i.openImage(ctx, i.final, loc, opened)
	if err != nil || platform == nil || !top.Desc.MediaType.IsIndex() {
		return top.Desc, top.Raw, err
	}
	_, matched, err := matchPlatforms(ctx, img.src, img.name, top, []v1.Platform{*platform})
	switch {
	case err != nil:
		return v1.Descriptor{}, nil, err
	case len(matched) > 1:
		var found []string
		for _, d := range matched {
			found = append(found, d.Digest.String())
		}
		return v1.Descriptor{}, nil, fmt.Errorf("%s has %d image manifests for %s (%s): there is no single one to show; name one by digest", ref, len(matched), platform, strings.Join(found, ", "))
	}
	raw, err := img.src.Manifest(ctx, matched[0])
	if err != nil {
		return v1.Descriptor{}, nil, err
	}
	return matched[0], raw, nil
}
