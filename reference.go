package imo

import (
	"fmt"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
)

// imageRef is an image reference as it was written: its repository, and
// the tag and digest it names, either of which may be absent.
type imageRef struct {
	repo   name.Repository
	tag    string // "" when none is written
	digest string // "" when none is written
}

// parseImageRef parses REPO[:TAG][@DIGEST], keeping a tag written next to
// a digest (go-containerregistry drops it). The error gives the reason,
// such as a repository with upper-case letters or a tag too long.
func parseImageRef(s string, opts ...name.Option) (imageRef, error) {
	base, digest, hasDigest := strings.Cut(s, "@")
	if hasDigest {
		d, err := name.NewDigest(s, opts...)
		if err != nil {
			return imageRef{}, err
		}
		digest = d.DigestStr()
	}
	if !explicitTag(base) {
		repo, err := name.NewRepository(base, opts...)
		if err != nil {
			return imageRef{}, err
		}
		return imageRef{repo: repo, digest: digest}, nil
	}
	t, err := name.NewTag(base, opts...)
	if err != nil {
		return imageRef{}, err
	}
	return imageRef{repo: t.Context(), tag: t.TagStr(), digest: digest}, nil
}

// explicitTag reports whether a reference without its digest writes a tag:
// a colon after the last slash (before it, a colon is a registry's port).
func explicitTag(base string) bool {
	return strings.Contains(base[strings.LastIndexByte(base, '/')+1:], ":")
}

// fetch is the reference to fetch the image by: its digest when there is
// one, else its tag, else "latest".
func (r imageRef) fetch() name.Reference {
	switch {
	case r.digest != "":
		return r.repo.Digest(r.digest)
	case r.tag != "":
		return r.repo.Tag(r.tag)
	}
	return r.repo.Tag(name.DefaultTag)
}

// String is the reference as go-containerregistry writes it, with both
// tag and digest where both were written.
func (r imageRef) String() string {
	s := r.repo.String()
	if r.tag != "" {
		s += ":" + r.tag
	}
	if r.digest != "" {
		s += "@" + r.digest
	}
	return s
}

// namesRegistry reports whether a reference names its registry, as Docker
// decides: its first path component has a dot or a colon, or is
// localhost. Without one, go-containerregistry means Docker Hub.
func namesRegistry(s string) bool {
	first, _, ok := strings.Cut(s, "/")
	return ok && (strings.ContainsAny(first, ".:") || first == "localhost")
}

// isHost reports whether s, with no slash, names a registry host[:port]
// rather than a Docker Hub image ("app:v2").
func isHost(s string) bool {
	if strings.Contains(s, "/") || s == "" {
		return false
	}
	if s == "localhost" || strings.HasPrefix(s, "localhost:") || strings.HasPrefix(s, "[") {
		return true
	}
	host, port, hasPort := strings.Cut(s, ":")
	if hasPort {
		if port == "" || strings.Trim(port, "0123456789") != "" {
			return false
		}
		return host != ""
	}
	return strings.Contains(host, ".")
}

// parseRef parses a reference the caller gave, marking it for plain HTTP
// when asked. Errors wrap [ErrInvalidReference] and say what is wrong.
func (i *Incremental) parseRef(s string, plainHTTP bool) (imageRef, error) {
	var opts []name.Option
	if plainHTTP {
		opts = append(opts, name.Insecure)
	}
	r, err := parseImageRef(s, opts...)
	if err != nil {
		return imageRef{}, fmt.Errorf("%w: %q: %v", ErrInvalidReference, s, err)
	}
	return r, nil
}
