package imo

import (
	"fmt"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/imokit/imo/internal/reference"
)

// A push or vet destination is either an image reference, for an archive
// of one image, or a target: a registry with an optional repository
// prefix, under which each image of the archive lands at its own
// repository path, as skopeo sync and crane copy users know.

// isTarget reports whether dst names a target rather than an image: it
// ends in "/", or it is a registry host[:port] alone.
func isTarget(dst string) bool {
	return strings.HasSuffix(dst, "/") || reference.IsHost(dst)
}

// target is a registry and a repository prefix in it.
type target struct {
	registry name.Registry
	prefix   string
}

// parseTarget parses "host[:port][/prefix][/]".
func (i *Incremental) parseTarget(s string) (target, error) {
	host, prefix, _ := strings.Cut(strings.TrimSuffix(s, "/"), "/")
	reg, err := name.NewRegistry(host, append(i.push.NameOptions(), name.StrictValidation)...)
	if err != nil || !reference.IsHost(host) {
		return target{}, fmt.Errorf("%w: %q: want a registry host[:port] with an optional /prefix", ErrInvalidReference, s)
	}
	if prefix != "" && !reference.RepositoryPath(prefix) {
		return target{}, fmt.Errorf("%w: %q: prefix %q is not a repository path (lower-case letters, digits, separators)", ErrInvalidReference, s, prefix)
	}
	return target{registry: reg, prefix: prefix}, nil
}

// ref is where the image the archive names source, whose top manifest is
// top, lands under t: the target's prefix, then source's repository path,
// with source's tag (its digest alone when it has none).
func (t target) ref(source string, top v1.Hash) (name.Reference, error) {
	src, err := parseSource(source)
	if err != nil {
		return nil, err
	}
	path := src.Repo.RepositoryStr()
	if !reference.RepositoryPath(path) {
		return nil, fmt.Errorf("%w: the archive names the image %q, whose repository path %q is not plain lower-case components", ErrInvalidTarget, source, path)
	}
	return src.In(t.registry.Repo(t.prefix, path), top), nil
}

// within reports whether repo lies under the target's prefix.
func (t target) within(repo string) bool {
	return t.prefix == "" || repo == t.prefix || strings.HasPrefix(repo, t.prefix+"/")
}

// parseSource parses the reference an archive names an image by. A
// reference with neither tag nor digest meant "latest" when it was pulled.
func parseSource(source string) (reference.Ref, error) {
	if source == "" {
		return reference.Ref{}, fmt.Errorf("%w: the image has no reference name in the archive; push it to an explicit reference", ErrInvalidTarget)
	}
	if loc, err := reference.ParseLocation(source); err == nil && loc.Kind != reference.Registry {
		return reference.Ref{}, fmt.Errorf("%w: the archive's image %q was pulled from a layout or tar, which gives it no repository path: push it to an image reference (REGISTRY/REPO[:TAG]) or a layout", ErrInvalidTarget, source)
	}
	src, err := reference.Parse(source)
	if err != nil {
		return reference.Ref{}, fmt.Errorf("%w: the archive names the image %q, which is not a reference: %v", ErrInvalidTarget, source, err)
	}
	if src.Tag == "" && src.Digest == "" {
		src.Tag = name.DefaultTag
	}
	return src, nil
}

// placeImage decides where the one image of an archive goes for a
// destination written as an image reference. The destination must name
// its registry. A destination without tag or digest takes the tag the
// image had at the source (named by imo's plan, when fromPlan, or by
// index.json, where a bare name is a tag), or, without one, its digest. A
// digest in the destination must be the image's.
func (i *Incremental) placeImage(dst string, img *destImage, fromPlan bool) (name.Reference, error) {
	if !reference.NamesRegistry(dst) {
		return nil, fmt.Errorf("%w: destination %q names no registry: imo pushes only to a registry you name (write host[:port]/%s, or docker.io/%s for Docker Hub)", ErrInvalidReference, dst, dst, dst)
	}
	r, err := reference.Parse(dst, i.push.NameOptions()...)
	if err != nil {
		return nil, fmt.Errorf("destination: %w: %q: %v", ErrInvalidReference, dst, err)
	}
	top := img.graph.Top().Desc.Digest
	if r.Digest != "" && r.Digest != top.String() {
		return nil, fmt.Errorf("destination %s names a digest, but the archive holds %s", dst, top)
	}
	if r.Tag == "" && r.Digest == "" {
		r.Tag = sourceTag(img.name, fromPlan)
	}
	return r.In(r.Repo, top), nil
}

// sourceTag is the tag the archive's name for an image carries, or "" for
// an image named by digest alone; an image pulled from a layout or an
// oci-archive, the tag it had there. imo's plan holds references as the
// user wrote them; index.json's ref.name annotation, as other tools write
// it, is often a tag alone.
func sourceTag(source string, fromPlan bool) string {
	if !fromPlan && reference.BareTag(source) {
		return source
	}
	if loc, err := reference.ParseLocation(source); err == nil && loc.Kind != reference.Registry {
		if reference.BareTag(loc.Tag) {
			return loc.Tag
		}
		return ""
	}
	src, err := parseSource(source)
	if err != nil {
		return ""
	}
	return src.Tag
}
