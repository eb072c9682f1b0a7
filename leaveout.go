package imo

import (
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/imokit/imo/archive"
	"github.com/imokit/imo/internal/graph"
	"github.com/imokit/imo/inventory"
)

// imageBlobs is one image of a pull as the rule that decides what to leave
// out sees it: which blobs it uses, and which layers its base holds (of
// any platform; none for scratch and for artifacts).
type imageBlobs struct {
	uses map[v1.Hash]bool
	base map[v1.Hash]bool
}

// leaveOut decides, for each blob of a pull (blobs: every image's, once
// each), whether the archive carries it and, if not, why. It is the heart
// of imo, and a function of data alone:
//
//   - a non-distributable layer is never carried: registries do not hold
//     it;
//   - a config is carried, and a layer is carried when some image uses it
//     whose base lacks it; otherwise it is left out "in base";
//   - a blob that would be carried is left out when an inventory of the
//     far side lists it (the first that does, in order), or else when an
//     earlier archive sent it (the first that did).
//
// A blob left out that an inventory lists records the repositories that
// held it (at most archive.MaxHeldBy), for push to mount it from.
func leaveOut(blobs []*graph.Blob, images []imageBlobs, have []*inventory.Inventory, sent []sentArchive) []archive.PlanBlob {
	out := make([]archive.PlanBlob, len(blobs))
	for k, b := range blobs {
		pb := archive.PlanBlob{MediaType: b.Desc.MediaType, Digest: b.Desc.Digest, Size: b.Desc.Size, Config: b.Config, NeededBy: b.NeededBy}
		if b.Foreign() {
			pb.Reason = archive.ReasonForeign
			out[k] = pb
			continue
		}
		var listed *inventory.Inventory
		var held inventory.Blob
		for _, inv := range have {
			if ib, ok := inv.Blob(b.Desc.Digest); ok {
				listed, held = inv, ib
				break
			}
		}
		var sentIn string
		for _, s := range sent {
			if s.blobs[b.Desc.Digest] {
				sentIn = s.Archive
				break
			}
		}
		switch {
		case !neededByAnImage(b, images):
			pb.Reason = archive.ReasonInBase
		case listed != nil:
			pb.Reason = archive.InInventory(listed.Name(), listed.Taken)
		case sentIn != "":
			pb.Reason = archive.SentIn(sentIn)
		default:
			pb.Included = true
		}
		if listed != nil && !pb.Included {
			pb.HeldBy = held.Repositories[:min(len(held.Repositories), archive.MaxHeldBy)]
		}
		out[k] = pb
	}
	return out
}

// neededByAnImage reports whether some image uses b and its base lacks b:
// a config always, a layer when the base does not hold it.
func neededByAnImage(b *graph.Blob, images []imageBlobs) bool {
	for _, img := range images {
		if img.uses[b.Desc.Digest] && (b.Config || !img.base[b.Desc.Digest]) {
			return true
		}
	}
	return false
}
