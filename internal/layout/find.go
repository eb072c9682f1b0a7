package layout

import (
	"fmt"
	"slices"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/imokit/imo/archive"
)

// NotFoundError means a layout's index.json names no image by the tag or
// digest asked for. It lists the names it has.
type NotFoundError struct {
	// Layout is the layout or archive, as errors call it.
	Layout string
	// Tag and Digest are what was asked for; either may be empty.
	Tag, Digest string
	// Tags are the names index.json gives its images.
	Tags []string
	// Images is how many images index.json lists.
	Images int
}

// Error names what was asked for and what the layout has.
func (e *NotFoundError) Error() string {
	has := "it names none of its images"
	if len(e.Tags) > 0 {
		has = "it has " + strings.Join(e.Tags, ", ")
	}
	switch {
	case e.Tag == "" && e.Digest == "":
		return fmt.Sprintf("%s holds %d images: name one (%s)", e.Layout, e.Images, has)
	case e.Digest != "":
		return fmt.Sprintf("%s lists no image %s in its index.json", e.Layout, e.Digest)
	}
	return fmt.Sprintf("%s has no image named %q: %s", e.Layout, e.Tag, has)
}

// Find returns the descriptor of the image idx, the index.json of the
// layout named where, lists under the name tag (its
// org.opencontainers.image.ref.name annotation) and with the digest
// digest, either of which may be empty. With neither, idx must list one
// image. An image not found is a [*NotFoundError].
func Find(idx *v1.IndexManifest, where, tag, digest string) (v1.Descriptor, error) {
	var tags []string
	var found []v1.Descriptor
	for _, d := range idx.Manifests {
		n := d.Annotations[archive.RefNameAnnotation]
		if n != "" && !slices.Contains(tags, n) {
			tags = append(tags, n)
		}
		if (tag == "" || n == tag) && (digest == "" || d.Digest.String() == digest) {
			found = append(found, d)
		}
	}
	switch {
	case len(found) == 1:
		return found[0], nil
	case len(found) > 1 && tag == "" && digest == "":
		return v1.Descriptor{}, &NotFoundError{Layout: where, Tags: tags, Images: len(idx.Manifests)}
	case len(found) > 1 && slices.ContainsFunc(found[1:], func(d v1.Descriptor) bool { return d.Digest != found[0].Digest }):
		return v1.Descriptor{}, fmt.Errorf("%s names %d different images %q; name it by digest", where, len(found), tag)
	case len(found) > 1:
		return found[0], nil
	}
	return v1.Descriptor{}, &NotFoundError{Layout: where, Tag: tag, Digest: digest, Tags: tags, Images: len(idx.Manifests)}
}
