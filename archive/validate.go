package archive

import (
	"context"
	"fmt"
	"io"
	"slices"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/imokit/imo/internal/graph"
)

// Validate checks, without a registry, that the archive is whole and what
// it says it is: every manifest of every image index.json lists matches
// its descriptor, and for an archive imo wrote, index.json and the
// manifests are the plan's images, the configs and layers the plan's
// blobs, carried or left out as it says, with no other blob or delta;
// then it reads and hashes every blob and delta the archive carries. It is
// [Reader.Verify] without the signature. The error wraps [ErrInvalid] and
// names what is wrong.
func (a *Reader) Validate(ctx context.Context) error {
	return a.checkContents(ctx, ErrInvalid)
}

// checkContents checks the archive's contents against its plan and hashes
// what it carries; a failure wraps kind.
func (a *Reader) checkContents(ctx context.Context, kind error) error {
	gs, err := a.graphs(ctx)
	if err != nil {
		if ctx.Err() != nil || kind == ErrInvalid {
			return err
		}
		return fmt.Errorf("%w: %w", kind, err)
	}
	if a.plan == nil {
		return a.checkBytes(ctx, a.describe(gs).Blobs, kind)
	}
	if err := a.checkImages(gs, kind); err != nil {
		return err
	}
	if err := a.checkBlobs(gs, kind); err != nil {
		return err
	}
	return a.checkBytes(ctx, a.plan.Blobs, kind)
}

// fail is an error wrapping kind about the archive.
func (a *Reader) fail(kind error, format string, args ...any) error {
	return fmt.Errorf("%w: %s: %s", kind, a.name, fmt.Sprintf(format, args...))
}

// checkImages checks index.json and each image's manifests against the
// plan's images.
func (a *Reader) checkImages(gs []*graph.Graph, kind error) error {
	if len(a.plan.Images) != len(a.index.Manifests) {
		return a.fail(kind, "%s lists %d images, %s %d", IndexFile, len(a.index.Manifests), PlanFile, len(a.plan.Images))
	}
	for n, d := range a.index.Manifests {
		img := a.plan.Images[n]
		if d.Digest != img.Final.Digest || d.Annotations[RefNameAnnotation] != img.Final.Reference {
			return a.fail(kind, "%s names %s %s as image %d, %s names %s %s", IndexFile, d.Annotations[RefNameAnnotation], d.Digest, n+1, PlanFile, img.Final.Reference, img.Final.Digest)
		}
		got := gs[n].Descriptors()
		if !slices.EqualFunc(got, img.Manifests, sameDescriptor) {
			return a.fail(kind, "the manifests of %s are not those %s names", img.Final.Reference, PlanFile)
		}
	}
	return nil
}

// sameDescriptor reports whether x and y name the same manifest the same
// way: digest, size, media type (which decides how it is read and the
// Content-Type it is pushed with) and platform.
func sameDescriptor(x, y v1.Descriptor) bool {
	if x.Digest != y.Digest || x.Size != y.Size || x.MediaType != y.MediaType || (x.Platform == nil) != (y.Platform == nil) {
		return false
	}
	return x.Platform == nil || x.Platform.Equals(*y.Platform)
}

// checkBlobs checks that the images' configs and layers are the plan's
// blobs, carried or left out as it says, and that the archive carries no
// other blob or delta.
func (a *Reader) checkBlobs(gs []*graph.Graph, kind error) error {
	all := graph.Merge(gs)
	planned := map[v1.Hash]PlanBlob{}
	for _, b := range a.plan.Blobs {
		planned[b.Digest] = b
	}
	if len(planned) != len(all.Blobs) {
		return a.fail(kind, "the images use %d configs and layers, %s names %d", len(all.Blobs), PlanFile, len(planned))
	}
	expected := map[string]bool{}
	for _, m := range all.Manifests {
		expected[BlobName(m.Desc.Digest)] = true
	}
	for _, b := range all.Blobs {
		pb, ok := planned[b.Desc.Digest]
		switch {
		case !ok || pb.Size != b.Desc.Size:
			return a.fail(kind, "blob %s is not the one %s names", b.Desc.Digest, PlanFile)
		case pb.Included != a.Has(pb.Digest):
			return a.fail(kind, "%s says blob %s is carried: %v; the archive carries it: %v", PlanFile, pb.Digest, pb.Included, a.Has(pb.Digest))
		case pb.Delta != nil && pb.Delta.Digest == (v1.Hash{}):
			return a.fail(kind, "%s names no digest for the delta of %s", PlanFile, pb.Digest)
		}
		if pb.Included {
			expected[BlobName(pb.Digest)] = true
		}
		if pb.Delta != nil {
			expected[DeltaName(pb.Digest)] = true
		}
	}
	for name := range a.entries {
		if (strings.HasPrefix(name, blobsDir+"/") || strings.HasPrefix(name, DeltasDir+"/")) && !expected[name] {
			return a.fail(kind, "it carries %s, which %s does not name", name, PlanFile)
		}
	}
	return nil
}

// checkBytes hashes every blob and delta the archive carries against the
// digest its plan names (the images' descriptors, for an archive imo did
// not write).
func (a *Reader) checkBytes(ctx context.Context, blobs []PlanBlob, kind error) error {
	for _, b := range blobs {
		if err := ctx.Err(); err != nil {
			return err
		}
		if b.Included {
			if err := a.drain(ctx, BlobName(b.Digest), v1.Descriptor{Digest: b.Digest, Size: b.Size}, kind); err != nil {
				return err
			}
		}
		if b.Delta != nil {
			if err := a.drain(ctx, DeltaName(b.Digest), v1.Descriptor{Digest: b.Delta.Digest, Size: b.Delta.Size}, kind); err != nil {
				return err
			}
		}
	}
	return nil
}

// drain reads the entry name to its end through a check against desc,
// stopping when ctx ends.
func (a *Reader) drain(ctx context.Context, name string, desc v1.Descriptor, kind error) error {
	s, ok := a.section(name)
	if !ok {
		return a.fail(kind, "no %s", name)
	}
	rc, err := a.verified(s, desc)
	if err == nil {
		_, err = io.Copy(io.Discard, contextReader{ctx: ctx, r: rc})
	}
	switch {
	case ctx.Err() != nil:
		return ctx.Err()
	case err != nil:
		return a.fail(kind, "%v", err)
	}
	return nil
}
