// Package reference parses image references as users write them, keeping
// what go-containerregistry's parser drops (a tag written next to a
// digest), and says whether a string names a registry, a host, or a
// repository path imo can push to.
package reference

import (
	"regexp"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// Ref is an image reference as it was written: its repository, and the tag
// and digest it names, either of which may be absent.
type Ref struct {
	Repo   name.Repository
	Tag    string // "" when none is written
	Digest string // "" when none is written
}

// Parse parses REPO[:TAG][@DIGEST], keeping a tag written next to a
// digest. The error gives the reason, such as a repository with upper-case
// letters or a tag too long.
func Parse(s string, opts ...name.Option) (Ref, error) {
	base, digest, hasDigest := strings.Cut(s, "@")
	if hasDigest {
		d, err := name.NewDigest(s, opts...)
		if err != nil {
			return Ref{}, err
		}
		digest = d.DigestStr()
	}
	if !explicitTag(base) {
		repo, err := name.NewRepository(base, opts...)
		if err != nil {
			return Ref{}, err
		}
		return Ref{Repo: repo, Digest: digest}, nil
	}
	t, err := name.NewTag(base, opts...)
	if err != nil {
		return Ref{}, err
	}
	return Ref{Repo: t.Context(), Tag: t.TagStr(), Digest: digest}, nil
}

// explicitTag reports whether a reference without its digest writes a tag:
// a colon after the last slash (before it, a colon is a registry's port).
func explicitTag(base string) bool {
	return strings.Contains(base[strings.LastIndexByte(base, '/')+1:], ":")
}

// Fetch is the reference to fetch the image by: its digest when there is
// one, else its tag, else "latest".
func (r Ref) Fetch() name.Reference {
	switch {
	case r.Digest != "":
		return r.Repo.Digest(r.Digest)
	case r.Tag != "":
		return r.Repo.Tag(r.Tag)
	}
	return r.Repo.Tag(name.DefaultTag)
}

// In is where an image named r lands in repo: at r's tag, or, when r
// names no tag, at top, the digest of the image's top manifest.
func (r Ref) In(repo name.Repository, top v1.Hash) name.Reference {
	if r.Tag != "" {
		return repo.Tag(r.Tag)
	}
	return repo.Digest(top.String())
}

// String is the reference as go-containerregistry writes it, with both tag
// and digest where both were written.
func (r Ref) String() string {
	s := r.Repo.String()
	if r.Tag != "" {
		s += ":" + r.Tag
	}
	if r.Digest != "" {
		s += "@" + r.Digest
	}
	return s
}

// NamesRegistry reports whether a reference names its registry, as Docker
// decides: its first path component has a dot or a colon, or is
// localhost. Without one, go-containerregistry means Docker Hub.
func NamesRegistry(s string) bool {
	first, _, ok := strings.Cut(s, "/")
	return ok && (strings.ContainsAny(first, ".:") || first == "localhost")
}

// IsHost reports whether s, with no slash, names a registry host[:port]
// rather than a Docker Hub image ("app:v2").
func IsHost(s string) bool {
	if strings.Contains(s, "/") || s == "" {
		return false
	}
	if s == "localhost" || strings.HasPrefix(s, "localhost:") || strings.HasPrefix(s, "[") {
		return true
	}
	host, port, hasPort := strings.Cut(s, ":")
	if hasPort {
		return host != "" && port != "" && strings.Trim(port, "0123456789") == ""
	}
	return strings.Contains(host, ".")
}

// repositoryPath matches a repository path as the distribution
// specification defines it.
var repositoryPath = regexp.MustCompile(`^[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*)*$`)

// RepositoryPath reports whether s is a repository path imo can push to
// and mount from: lower-case components joined by "/".
func RepositoryPath(s string) bool { return repositoryPath.MatchString(s) }

// bareTag matches a tag written alone.
var bareTag = regexp.MustCompile(`^[\w][\w.-]{0,127}$`)

// BareTag reports whether s is a tag written alone, as other tools often
// name the images of an OCI layout.
func BareTag(s string) bool { return bareTag.MatchString(s) }
