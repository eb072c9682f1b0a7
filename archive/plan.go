package archive

import (
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// PlanVersion is the version of the [Plan] format this package writes.
const PlanVersion = 1

// Plan describes what an archive carries and what it leaves out. A pull
// writes it as [PlanFile]; [Reader.Check] reads it, or builds it from the
// archive's contents for archives written by other tools.
type Plan struct {
	// Version is the format version, [PlanVersion].
	Version int `json:"imoArchiveVersion"`
	// Images are the final images, in index.json order.
	Images []PlanImage `json:"images"`
	// Blobs are every config and layer the images reference, once each.
	Blobs []PlanBlob `json:"blobs"`
	// Inventories are the inventories of the far side's registry that the
	// pull left blobs out by.
	Inventories []PlanInventory `json:"inventories,omitempty"`
	// Bundle is true for an archive of a bundle of images: its destination
	// is always a target.
	Bundle bool `json:"bundle,omitempty"`
	// Signer, for a signed archive, is the [Fingerprint] of the key that
	// signed it (see [SignatureFile]).
	Signer string `json:"signer,omitempty"`
	// Sent are the earlier archives the pull left blobs out by, as sent
	// before (see [SentIn]).
	Sent []PlanSent `json:"sent,omitempty"`
}

// PlanSent is an earlier archive whose blobs a pull left out as sent
// before: on a one-way link, the far side holds what earlier archives
// brought and relied on.
type PlanSent struct {
	// Archive is the earlier archive's file name.
	Archive string `json:"archive"`
	// Plan is the sha256 of its imo.json.
	Plan v1.Hash `json:"plan"`
	// Blobs is how many configs and layers it brought or relied on.
	Blobs int `json:"blobs"`
}

// Delivered lists the configs and layers the far side holds once the
// archive's images are pushed: those it carries, whole or as deltas, and
// those it relies on the far side having; non-distributable layers aside.
func (p *Plan) Delivered() []v1.Hash {
	var out []v1.Hash
	for _, b := range p.Blobs {
		if b.Reason != ReasonForeign {
			out = append(out, b.Digest)
		}
	}
	return out
}

// PlanInventory is an inventory an archive left blobs out by.
type PlanInventory struct {
	// Registry and Prefix say what was inventoried.
	Registry string `json:"registry"`
	Prefix   string `json:"prefix,omitempty"`
	// Taken is when the inventory was taken: the far side held every blob
	// it lists then.
	Taken time.Time `json:"taken"`
	// Blobs is how many blobs and manifests the inventory lists.
	Blobs int `json:"blobs"`
}

// Name is the registry and prefix the inventory covers, host[:port]/prefix.
func (p PlanInventory) Name() string {
	if p.Prefix == "" {
		return p.Registry
	}
	return p.Registry + "/" + p.Prefix
}

// PlanImage is one final image of an archive and the base it was diffed
// against.
type PlanImage struct {
	// Final is the image the archive lets the far side rebuild.
	Final ImageRef `json:"final"`
	// Base is the image the far side is expected to hold; its Reference is
	// "scratch" for a whole-image archive, and empty when unknown.
	Base ImageRef `json:"base"`
	// Platforms lists the platforms of the final image's child manifests.
	Platforms []string `json:"platforms,omitempty"`
	// Manifests are every manifest of the final image, the top one first.
	// Archives always carry them.
	Manifests []v1.Descriptor `json:"manifests"`
	// Subject is set for an artifact that refers to another image of the
	// archive (a signature, an attestation, an SBOM): the digest of the
	// manifest it refers to. Push writes it after that image, into the
	// same repository.
	Subject v1.Hash `json:"subject,omitzero"`
}

// NewPlanImage describes a final image whose manifests, top first, are
// manifests; their platforms make the image's.
func NewPlanImage(final, base ImageRef, manifests []v1.Descriptor) PlanImage {
	img := PlanImage{Final: final, Base: base, Manifests: manifests}
	for _, m := range manifests {
		if m.Platform != nil {
			img.Platforms = append(img.Platforms, m.Platform.String())
		}
	}
	return img
}

// ImageRef is an image reference and the digest it resolved to.
type ImageRef struct {
	Reference string  `json:"reference,omitempty"`
	Digest    v1.Hash `json:"digest,omitzero"`
}

// PlanBlob is a config or layer referenced by an archive's images.
type PlanBlob struct {
	MediaType types.MediaType `json:"mediaType"`
	Digest    v1.Hash         `json:"digest"`
	Size      int64           `json:"size"`
	// Config is true for image configs, false for layers.
	Config bool `json:"config,omitempty"`
	// Included is true when the archive carries the blob.
	Included bool `json:"included"`
	// Reason says why a blob is left out, such as [ReasonInBase]; for a
	// layer carried whole after a sub-layer delta was tried, why no delta
	// is used.
	Reason Reason `json:"reason,omitempty"`
	// NeededBy names the manifests that reference the blob.
	NeededBy []string `json:"neededBy"`
	// HeldBy, for a blob left out because an inventory lists it, are the
	// repositories of the inventoried registry that held it, where push
	// mounts it from when the destination repository lacks it.
	HeldBy []string `json:"heldBy,omitempty"`
	// Delta, for a layer the archive carries as a sub-layer delta, says
	// how the far side rebuilds it.
	Delta *PlanDelta `json:"delta,omitempty"`
}

// PlanDelta is a layer carried as a sub-layer delta: its tar rebuilt from
// the contents of base layers the far side holds, then recompressed into
// the exact blob.
type PlanDelta struct {
	// Size and Digest are the size and sha256 of the delta, in DeltasDir.
	Size   int64   `json:"size"`
	Digest v1.Hash `json:"digest,omitzero"`
	// DiffID is the digest of the layer's uncompressed tar.
	DiffID v1.Hash `json:"diffID,omitzero"`
	// Recipe names the encoder, its pinned version and parameters that
	// recompress the tar into the blob.
	Recipe string `json:"recipe"`
	// Bases are the base layers the delta draws contents from, which the
	// destination must hold.
	Bases []v1.Descriptor `json:"bases"`
}

// Reason says why an archive does not carry a blob whole. It is text, for
// people; the constants and constructors below are every reason imo gives.
type Reason string

// The reasons a blob is left out.
const (
	// ReasonInBase: the base image of every image that uses the blob has it.
	ReasonInBase Reason = "in base"
	// ReasonForeign: a non-distributable layer, which registries do not
	// hold.
	ReasonForeign Reason = "non-distributable: fetched from its URLs by whoever runs the image"
	// ReasonDelta: the layer is carried as a sub-layer delta.
	ReasonDelta Reason = "carried as a sub-layer delta"
	// ReasonNotInArchive: an archive of another tool leaves the blob out.
	ReasonNotInArchive Reason = "not in archive"
)

const (
	inventoryPrefix = "in the inventory of "
	noDeltaPrefix   = "whole, no sub-layer delta: "
	sentPrefix      = "sent before, in "
)

// SentIn is the reason for a blob left out because the earlier archive
// name brought it, or relied on the far side having it.
func SentIn(name string) Reason { return Reason(sentPrefix + name) }

// InInventory is the reason for a blob left out because the inventory of
// name (host[:port]/prefix) taken at taken lists it.
func InInventory(name string, taken time.Time) Reason {
	return Reason(inventoryPrefix + name + " taken " + taken.UTC().Format(time.RFC3339))
}

// NoDelta is the reason a layer is carried whole although a sub-layer
// delta was tried.
func NoDelta(why error) Reason { return Reason(noDeltaPrefix + why.Error()) }

// Inventory reports whether the reason is [InInventory]'s.
func (r Reason) Inventory() bool { return strings.HasPrefix(string(r), inventoryPrefix) }

// Bytes returns how many content bytes the archive carries (manifests and
// included blobs) and how many the whole images would take. Tar headers are
// not counted.
func (p *Plan) Bytes() (carried, whole int64) {
	for _, img := range p.Images {
		for _, m := range img.Manifests {
			carried += m.Size
			whole += m.Size
		}
	}
	for _, b := range p.Blobs {
		whole += b.Size
		carried += b.carried()
	}
	return carried, whole
}

// carried is how many bytes the archive carries for b.
func (b *PlanBlob) carried() int64 {
	switch {
	case b.Included:
		return b.Size
	case b.Delta != nil:
		return b.Delta.Size
	}
	return 0
}

// ImageBytes returns how many content bytes the archive carries for its
// n-th image (its manifests and the included blobs it uses) and how many
// the whole image takes. Across images, shared blobs count in each image
// that uses them: the sum over images less [Plan.Bytes] is what storing
// each blob once saves.
func (p *Plan) ImageBytes(n int) (carried, whole int64) {
	mine := map[string]bool{}
	for _, m := range p.Images[n].Manifests {
		carried += m.Size
		whole += m.Size
		mine[m.Digest.String()] = true
	}
	for _, b := range p.Blobs {
		for _, user := range b.NeededBy {
			if mine[user[strings.LastIndexByte(user, ' ')+1:]] {
				whole += b.Size
				carried += b.carried()
				break
			}
		}
	}
	return carried, whole
}
