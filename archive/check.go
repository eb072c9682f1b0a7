package archive

import (
	"context"
	"fmt"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/imokit/imo/internal/graph"
)

// Inspect opens the archive at path and checks and describes it, as
// [Reader.Check] does.
func Inspect(ctx context.Context, path string) (*Plan, error) {
	a, err := Open(path)
	if err != nil {
		return nil, err
	}
	defer a.Close()
	return a.Check(ctx)
}

// Check reads every manifest of every image the archive's index lists,
// checking each against its descriptor, and describes the archive: the
// final images, the bases they were diffed against (for archives imo
// wrote), and every blob with whether the archive carries it, and if not,
// why. It works on any OCI image layout in a tar, such as skopeo's
// oci-archive. It does not read blob bodies; [Reader.Blob] checks those.
func (a *Reader) Check(ctx context.Context) (*Plan, error) {
	gs, err := a.graphs(ctx)
	if err != nil {
		return nil, err
	}
	return a.describe(gs), nil
}

// graphs walks every image index.json lists, in its order.
func (a *Reader) graphs(ctx context.Context) ([]*graph.Graph, error) {
	gs, err := graph.WalkAll(ctx, a.index.Manifests, a, a.name)
	if err != nil && ctx.Err() == nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrInvalid, a.name, err)
	}
	return gs, err
}

// describe returns the archive's plan as the archive's contents show it,
// with the base and final references from imo.json where it has them.
func (a *Reader) describe(gs []*graph.Graph) *Plan {
	images := make([]PlanImage, len(gs))
	for n, g := range gs {
		var base ImageRef
		if a.planned() {
			base = a.plan.Images[n].Base
		}
		images[n] = NewPlanImage(ImageRef{Reference: a.ImageName(n), Digest: g.Top().Desc.Digest}, base, g.Descriptors())
		images[n].Subject = a.Subject(n)
	}
	reasons := map[v1.Hash]Reason{}
	if a.planned() {
		for _, b := range a.plan.Blobs {
			reasons[b.Digest] = b.Reason
		}
	}
	p := &Plan{Version: PlanVersion, Images: images}
	for _, b := range graph.Merge(gs).Blobs {
		pb := PlanBlob{MediaType: b.Desc.MediaType, Digest: b.Desc.Digest, Size: b.Desc.Size, Config: b.Config, NeededBy: b.NeededBy}
		switch {
		case a.Has(b.Desc.Digest):
			pb.Included, pb.Reason = true, reasons[b.Desc.Digest] // why no delta, if one was tried
		case b.Foreign():
			pb.Reason = ReasonForeign
		case a.deltas[b.Desc.Digest] != nil:
			pb.Delta, pb.Reason = a.deltas[b.Desc.Digest], ReasonDelta
		case reasons[b.Desc.Digest] != "":
			pb.Reason = reasons[b.Desc.Digest]
		default:
			pb.Reason = ReasonNotInArchive
		}
		if !pb.Included {
			pb.HeldBy = a.heldBy[b.Desc.Digest]
		}
		p.Blobs = append(p.Blobs, pb)
	}
	if a.plan != nil {
		p.Inventories, p.Bundle, p.Signer = a.plan.Inventories, a.plan.Bundle, a.Signer()
	}
	return p
}
