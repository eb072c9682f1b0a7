package reference

import (
	"fmt"
	"regexp"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// Kind is the kind of place an image lives in.
type Kind int

// The places an image lives in, written in skopeo's transport syntax.
const (
	// Registry is a registry repository: docker://HOST/REPO[:TAG][@DIGEST],
	// or the same without "docker://".
	Registry Kind = iota
	// Layout is an OCI image layout directory: oci:DIR[:TAG] or
	// oci:DIR@DIGEST.
	Layout
	// OCIArchive is an OCI image layout in a tar: oci-archive:FILE[:TAG]
	// or oci-archive:FILE@DIGEST.
	OCIArchive
	// DockerArchive is a tar that docker save wrote:
	// docker-archive:FILE[:REPO:TAG].
	DockerArchive
)

// Transport prefixes, as skopeo spells them.
const (
	DockerPrefix        = "docker://"
	LayoutPrefix        = "oci:"
	OCIArchivePrefix    = "oci-archive:"
	DockerArchivePrefix = "docker-archive:"
)

// Location is where an image lives, as the user wrote it.
type Location struct {
	Kind Kind
	// Ref is the image in a registry, for Registry.
	Ref Ref
	// Path is the directory or file, for the other kinds.
	Path string
	// Tag names the image in a layout (its org.opencontainers.image.ref.name
	// annotation), or in a docker-archive (REPO:TAG); "" when none is written.
	Tag string
	// Digest names the image in a layout by its manifest digest; "" when
	// none is written.
	Digest string
	// written is the location as the user wrote it.
	written string
}

// refName matches the name of an image in a layout, its
// org.opencontainers.image.ref.name: a tag, as skopeo and buildx write it,
// or a whole reference, as imo's archives do.
var refName = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9._\-:/]{0,254}$`)

// ParseLocation parses a reference in skopeo's transport syntax: a
// registry reference with or without "docker://", "oci:DIR[:TAG]",
// "oci:DIR@sha256:...", "oci-archive:FILE[:TAG]" (or "@sha256:...") and
// "docker-archive:FILE[:REPO:TAG]". A path ends at its first colon, as
// skopeo reads it. opts are for registry references.
func ParseLocation(s string, opts ...name.Option) (Location, error) {
	loc := Location{written: s}
	var rest string
	switch {
	case strings.HasPrefix(s, LayoutPrefix):
		loc.Kind, rest = Layout, s[len(LayoutPrefix):]
	case strings.HasPrefix(s, OCIArchivePrefix):
		loc.Kind, rest = OCIArchive, s[len(OCIArchivePrefix):]
	case strings.HasPrefix(s, DockerArchivePrefix):
		loc.Kind, rest = DockerArchive, s[len(DockerArchivePrefix):]
	default:
		r, err := Parse(strings.TrimPrefix(s, DockerPrefix), opts...)
		if err != nil {
			return Location{}, err
		}
		loc.Ref = r
		return loc, nil
	}
	if loc.Kind != DockerArchive {
		if at := strings.LastIndex(rest, "@"); at >= 0 && strings.HasPrefix(rest[at+1:], "sha256:") {
			h, err := v1.NewHash(rest[at+1:])
			if err != nil {
				return Location{}, fmt.Errorf("%q is not a digest: %v", rest[at+1:], err)
			}
			rest, loc.Digest = rest[:at], h.String()
		}
	}
	loc.Path, loc.Tag, _ = strings.Cut(rest, ":")
	switch {
	case loc.Path == "":
		return Location{}, fmt.Errorf("no path after %q", s[:len(s)-len(rest)])
	case loc.Kind == DockerArchive && loc.Tag != "":
		if _, err := name.NewTag(loc.Tag); err != nil || !explicitTag(loc.Tag) {
			return Location{}, fmt.Errorf("%q is not REPO:TAG", loc.Tag)
		}
	case loc.Kind != DockerArchive && loc.Tag != "" && !refName.MatchString(loc.Tag):
		return Location{}, fmt.Errorf("%q is not an image name in a layout (a tag, or a reference such as host/app:v2)", loc.Tag)
	}
	return loc, nil
}

// String is the location as the user wrote it.
func (l Location) String() string {
	if l.written == "" && l.Kind == Registry {
		return l.Ref.String()
	}
	return l.written
}
