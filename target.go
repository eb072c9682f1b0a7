package imo

import (
	"fmt"
	"regexp"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
)

// A push or vet destination is either an image reference, for an archive
// of one image, or a target: a registry with an optional repository
// prefix, under which each image of the archive lands at its own
// repository path, as skopeo sync and crane copy users know.

// repoPath matches a repository path as the distribution specification
// defines it.
var repoPath = regexp.MustCompile(`^[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*)*$`)

// isTarget reports whether dst names a target rather than an image: it
// does when the archive holds several images, or when dst ends in "/".
func isTarget(dst string, images int) bool {
	return images > 1 || strings.HasSuffix(dst, "/")
}

// target is a registry and a repository prefix in it.
type target struct {
	registry name.Registry
	prefix   string
}

// parseTarget parses "host[:port][/prefix][/]".
func (i *Incremental) parseTarget(s string) (target, error) {
	host, prefix, _ := strings.Cut(strings.TrimSuffix(s, "/"), "/")
	var opts []name.Option
	if i.opts.plainPush {
		opts = append(opts, name.Insecure)
	}
	reg, err := name.NewRegistry(host, append(opts, name.StrictValidation)...)
	if err != nil || host == "" {
		return target{}, fmt.Errorf("%w: %q: want a registry host[:port] with an optional /prefix", ErrInvalidTarget, s)
	}
	if prefix != "" && !repoPath.MatchString(prefix) {
		return target{}, fmt.Errorf("%w: %q: prefix %q is not a repository path (lower-case letters, digits, separators)", ErrInvalidTarget, s, prefix)
	}
	return target{registry: reg, prefix: prefix}, nil
}

// ref is where the image the archive names source lands under t: the
// target's prefix, then source's repository path, with source's tag or
// digest.
func (t target) ref(source string) (name.Reference, error) {
	src, err := parseSource(source)
	if err != nil {
		return nil, err
	}
	path := src.Context().RepositoryStr()
	if !repoPath.MatchString(path) {
		return nil, fmt.Errorf("%w: the archive names the image %q, whose repository path %q is not plain lower-case components", ErrInvalidTarget, source, path)
	}
	return at(t.registry.Repo(t.prefix, path), src), nil
}

// within reports whether repo lies under the target's prefix.
func (t target) within(repo string) bool {
	return t.prefix == "" || repo == t.prefix || strings.HasPrefix(repo, t.prefix+"/")
}

// parseSource parses the reference an archive names an image by.
func parseSource(source string) (name.Reference, error) {
	if source == "" {
		return nil, fmt.Errorf("%w: the image has no reference name in the archive; push it to an explicit reference", ErrInvalidTarget)
	}
	src, err := name.ParseReference(source)
	if err != nil {
		return nil, fmt.Errorf("%w: the archive names the image %q, which is not a reference: %v", ErrInvalidTarget, source, err)
	}
	return src, nil
}

// at is src's tag or digest in repo.
func at(repo name.Repository, src name.Reference) name.Reference {
	if d, ok := src.(name.Digest); ok {
		return repo.Digest(d.DigestStr())
	}
	return repo.Tag(src.Identifier())
}
