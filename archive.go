package imo

import (
	"archive/tar"
	"bytes"
	"encoding/json"
	"fmt"
	"path"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// The names of the files in an archive. An archive is an OCI image layout
// in a plain tar; imo adds PlanFile, and DockerManifestFile for whole
// single-platform images.
const (
	// LayoutFile is the OCI layout marker, {"imageLayoutVersion":"1.0.0"}.
	LayoutFile = "oci-layout"
	// IndexFile is the OCI index: one descriptor per final image, annotated
	// with its reference name.
	IndexFile = "index.json"
	// PlanFile is imo's description of the archive: base and final
	// references and digests, and every blob with whether it is carried.
	// It is JSON encoding a [Plan].
	PlanFile = "imo.json"
	// DockerManifestFile lets docker load and skopeo's docker-archive
	// transport read a whole single-platform image.
	DockerManifestFile = "manifest.json"
	// blobsDir holds every blob the archive carries, by digest.
	blobsDir = "blobs"
	// DeltasDir holds the sub-layer deltas of layers the archive carries
	// as deltas (see [WithSublayerDeltas]), by the layer's digest. Other
	// tools ignore it.
	DeltasDir = "imo-deltas"
)

// PlanVersion is the version of the [Plan] format this package writes.
const PlanVersion = 1

// refNameAnnotation names the reference of an index.json entry.
const refNameAnnotation = "org.opencontainers.image.ref.name"

// Plan describes what an archive carries and what it leaves out. Pull
// writes it as [PlanFile]; [Inspect] reads it, or builds it from the
// archive's contents for archives written by other tools.
type Plan struct {
	// Version is the format version, [PlanVersion].
	Version int `json:"imoArchiveVersion"`
	// Images are the final images, in index.json order.
	Images []PlanImage `json:"images"`
	// Blobs are every config and layer the images reference, once each.
	Blobs []PlanBlob `json:"blobs"`
	// Inventories are the inventories of the far side's registry that the
	// pull left blobs out by (see [WithHave]).
	Inventories []PlanInventory `json:"inventories,omitempty"`
	// Bundle is true for an archive written by [Incremental.PullBundle] and
	// its siblings: its destination is always a target.
	Bundle bool `json:"bundle,omitempty"`
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
	// Reason says why a blob is left out, such as "in base"; for a layer
	// carried whole after a sub-layer delta was tried, why no delta is
	// used.
	Reason string `json:"reason,omitempty"`
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
	// Size is the size of the delta, in DeltasDir.
	Size int64 `json:"size"`
	// DiffID is the digest of the layer's uncompressed tar.
	DiffID v1.Hash `json:"diffID,omitzero"`
	// Recipe names the encoder, its pinned version and parameters that
	// recompress the tar into the blob.
	Recipe string `json:"recipe"`
	// Bases are the base layers the delta draws contents from, which the
	// destination must hold.
	Bases []v1.Descriptor `json:"bases"`
}

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

// planImage describes one final image of an archive.
func planImage(final, base ImageRef, g *imageGraph) PlanImage {
	img := PlanImage{Final: final, Base: base}
	for _, m := range g.manifests {
		img.Manifests = append(img.Manifests, v1.Descriptor{MediaType: m.desc.MediaType, Digest: m.desc.Digest, Size: m.desc.Size, Platform: m.desc.Platform})
		if m.desc.Platform != nil {
			img.Platforms = append(img.Platforms, m.desc.Platform.String())
		}
	}
	return img
}

// newPlan describes the images and every blob of g, their graphs merged;
// omitted says, for a blob, why it is left out, or "" when it is carried.
func newPlan(images []PlanImage, g *imageGraph, omitted func(*blobUse) string) *Plan {
	p := &Plan{Version: PlanVersion, Images: images}
	for _, b := range g.blobs {
		reason := omitted(b)
		p.Blobs = append(p.Blobs, PlanBlob{
			MediaType: b.desc.MediaType, Digest: b.desc.Digest, Size: b.desc.Size,
			Config: b.config, Included: reason == "", Reason: reason, NeededBy: b.neededBy,
		})
	}
	return p
}

// blobName is where a blob lives in an archive.
func blobName(h v1.Hash) string { return path.Join(blobsDir, h.Algorithm, h.Hex) }

// deltaName is where the sub-layer delta of the layer h lives in an archive.
func deltaName(h v1.Hash) string { return path.Join(DeltasDir, h.Algorithm, h.Hex) }

// segment is a piece of an archive: literal bytes, the content of a blob
// fetched when the archive is written, or a local file's content.
type segment struct {
	off  int64
	lit  []byte
	blob *v1.Descriptor
	file *localFile
}

// localFile is a file of known size the archive copies, such as a delta.
type localFile struct {
	path string
	size int64
}

// archiveLayout is a tar archive whose every byte is known but for blob
// contents, whose sizes are: each entry's offset is fixed before anything
// is fetched, so that blobs can be fetched in any order and written in
// place. Entries are deterministic: fixed times, owners and modes.
type archiveLayout struct {
	segs []segment
	size int64
}

var epoch = time.Unix(0, 0).UTC()

func (l *archiveLayout) literal(b []byte) {
	if len(b) > 0 {
		l.segs = append(l.segs, segment{off: l.size, lit: b})
		l.size += int64(len(b))
	}
}

func (l *archiveLayout) header(h *tar.Header) error {
	var buf bytes.Buffer
	if err := tar.NewWriter(&buf).WriteHeader(h); err != nil {
		return fmt.Errorf("writing %s: %w", h.Name, err)
	}
	l.literal(buf.Bytes())
	return nil
}

// pad fills an entry of n bytes up to the tar block size.
func (l *archiveLayout) pad(n int64) {
	if r := n % 512; r != 0 {
		l.literal(make([]byte, 512-r))
	}
}

func (l *archiveLayout) dir(name string) error {
	return l.header(&tar.Header{Typeflag: tar.TypeDir, Name: name + "/", Mode: 0o755, ModTime: epoch})
}

func (l *archiveLayout) file(name string, content []byte) error {
	if err := l.header(&tar.Header{Typeflag: tar.TypeReg, Name: name, Size: int64(len(content)), Mode: 0o644, ModTime: epoch}); err != nil {
		return err
	}
	l.literal(content)
	l.pad(int64(len(content)))
	return nil
}

func (l *archiveLayout) json(name string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return l.file(name, append(b, '\n'))
}

func (l *archiveLayout) blob(desc v1.Descriptor) error {
	if err := l.header(&tar.Header{Typeflag: tar.TypeReg, Name: blobName(desc.Digest), Size: desc.Size, Mode: 0o644, ModTime: epoch}); err != nil {
		return err
	}
	l.segs = append(l.segs, segment{off: l.size, blob: &desc})
	l.size += desc.Size
	l.pad(desc.Size)
	return nil
}

// local adds the entry name holding the content of a local file.
func (l *archiveLayout) local(name string, f *localFile) error {
	if err := l.header(&tar.Header{Typeflag: tar.TypeReg, Name: name, Size: f.size, Mode: 0o644, ModTime: epoch}); err != nil {
		return err
	}
	l.segs = append(l.segs, segment{off: l.size, file: f})
	l.size += f.size
	l.pad(f.size)
	return nil
}

// plan reports how many bytes of blobs writing the archive fetches.
func (l *archiveLayout) plan(r Reporter) {
	var total int64
	for _, s := range l.segs {
		if s.blob != nil {
			total += s.blob.Size
		}
	}
	r.Report(Event{Kind: TransferPlanned, Size: total})
}

// end writes the tar trailer: two zero blocks.
func (l *archiveLayout) end() { l.literal(make([]byte, 1024)) }
