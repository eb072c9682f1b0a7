package imo

import (
	"errors"
	"fmt"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/imokit/imo/archive"
	"github.com/imokit/imo/internal/graph"
	"github.com/imokit/imo/internal/layout"
	"github.com/imokit/imo/internal/verify"
	"github.com/imokit/imo/inventory"
	"github.com/imokit/imo/volume"
)

// Sentinel errors. Callers branch on them with [errors.Is]; the errors imo
// returns wrap them together with the image, blob or registry at fault.
// Some are the archive, inventory and manifest-walking packages' own: the
// same values, so that errors.Is finds them whichever package is asked.
var (
	// ErrMissingBlobs means the destination lacks blobs that an archive
	// references but does not carry. [*MissingBlobsError] wraps it and
	// lists every such blob.
	ErrMissingBlobs = errors.New("destination is missing blobs the archive does not carry")

	// ErrDigestMismatch means bytes read from a registry or an archive do not
	// hash to the digest, or do not have the size, that their descriptor
	// promises. [*DigestMismatchError] wraps it.
	ErrDigestMismatch = verify.ErrMismatch

	// ErrNoMatchingPlatform means a platform selection matched no manifest
	// of an image. [*PlatformError] wraps it.
	ErrNoMatchingPlatform = errors.New("no manifest matches the requested platforms")

	// ErrInvalidArchive means an archive is not a readable OCI image layout
	// in a tar: a bad entry, a missing or malformed index.json, a manifest
	// that is absent or does not parse (archive.ErrInvalid).
	ErrInvalidArchive = archive.ErrInvalid

	// ErrInvalidLayout means a directory named as an OCI layout
	// (oci:DIR) is not one: no oci-layout file, or an index.json that is
	// missing or does not parse.
	ErrInvalidLayout = layout.ErrInvalid

	// ErrBlobNotInLayout means an OCI layout lacks a blob its image needs.
	ErrBlobNotInLayout = layout.ErrBlobNotFound

	// ErrInvalidManifest means a manifest or index does not parse, or its
	// tree is beyond imo's limits (more than 10,000 manifests, indexes
	// nested more than 8 deep, a manifest over 8 MiB).
	ErrInvalidManifest = graph.ErrInvalidManifest

	// ErrUnsupportedMediaType means a manifest has a media type imo cannot
	// carry, such as Docker schema 1.
	ErrUnsupportedMediaType = graph.ErrUnsupportedMediaType

	// ErrInvalidOption means the options given to [New] are invalid or
	// conflict with each other. Every method of the [Incremental] returns it.
	ErrInvalidOption = errors.New("invalid option")

	// ErrInvalidPairs means the images given to [Incremental.Resolve] are
	// malformed: a pair without a base or a final image, a final image
	// listed twice.
	ErrInvalidPairs = errors.New("invalid list of image pairs")

	// ErrInvalidReference means a reference the caller gave does not parse
	// (the error says why: upper-case letters in a repository, a tag longer
	// than 128 characters...), or a push or vet destination names no
	// registry, or is neither an image reference nor a registry
	// host[:port] with an optional /prefix.
	ErrInvalidReference = errors.New("invalid reference")

	// ErrInvalidTarget means an archive's image cannot be placed under a
	// target: it has no reference name, or one whose repository path imo
	// cannot push to, or two images land at the same reference.
	ErrInvalidTarget = errors.New("invalid destination")

	// ErrInvalidInventory means an inventory file is not one imo can use
	// (inventory.ErrInvalid).
	ErrInvalidInventory = inventory.ErrInvalid

	// ErrUntrusted means an archive fails verification against the keys of
	// [WithVerifyKeys]: it is not signed, no key verifies its signature, or
	// its content is not what its signed plan names (archive.ErrUntrusted).
	ErrUntrusted = archive.ErrUntrusted

	// ErrIncompleteVolumes means the volumes of a volume set given as an
	// archive cannot be read whole: more are missing or damaged than its
	// parity covers. [*volume.IncompleteError] wraps it and names each
	// (volume.ErrIncomplete).
	ErrIncompleteVolumes = volume.ErrIncomplete

	// ErrEncoderMismatch means an archive carries a layer as a sub-layer
	// delta whose recipe this build of imo cannot reproduce byte for byte
	// (another version of the encoder). Vet and push refuse such an archive
	// before uploading anything; pull it again with the same imo version
	// as the push side, or without sub-layer deltas.
	ErrEncoderMismatch = errors.New("sub-layer delta needs an encoder this build does not reproduce")
)

// ImageNotFoundError means an OCI layout or oci-archive lists no image by
// the tag or digest asked for; it lists the names it has.
type ImageNotFoundError = layout.NotFoundError

// DigestMismatchError reports content whose digest or size differs from its
// descriptor: Source says where it was read (a registry repository or an
// archive), Want and WantSize what the descriptor promised, Got and GotSize
// what was read (Got is empty when the size was wrong). It wraps
// [ErrDigestMismatch].
type DigestMismatchError = verify.MismatchError

// MissingBlob is one blob that an archive leaves out and the destination
// repository does not hold.
type MissingBlob struct {
	// Digest, Size and MediaType come from the manifest that needs the blob.
	Digest    v1.Hash
	Size      int64
	MediaType types.MediaType
	// NeededBy names the manifests that reference the blob: their digests,
	// with the platform where the manifest is part of an index.
	NeededBy []string
}

// MissingBlobsError lists every blob an archive leaves out that the
// destination repository lacks. It wraps [ErrMissingBlobs].
type MissingBlobsError struct {
	// Repository is the destination repository that was checked.
	Repository string
	// Blobs holds every missing blob, in the order the archive references them.
	Blobs []MissingBlob
}

// Error lists the repository and every missing blob.
func (e *MissingBlobsError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s lacks %d blob(s) the archive does not carry:", e.Repository, len(e.Blobs))
	for _, m := range e.Blobs {
		fmt.Fprintf(&b, "\n  %s (%s, %d bytes) needed by %s", m.Digest, m.MediaType, m.Size, strings.Join(m.NeededBy, ", "))
	}
	return b.String()
}

// Unwrap returns [ErrMissingBlobs].
func (e *MissingBlobsError) Unwrap() error { return ErrMissingBlobs }

// PlatformError reports a platform selection that matched nothing. It wraps
// [ErrNoMatchingPlatform].
type PlatformError struct {
	// Image is the reference whose manifests were searched.
	Image string
	// Wanted are the platforms that were asked for.
	Wanted []string
	// Available are the platforms the image offers.
	Available []string
}

// Error names the image, what was wanted and what exists.
func (e *PlatformError) Error() string {
	return fmt.Sprintf("%s has no manifest for %s; it offers %s",
		e.Image, strings.Join(e.Wanted, ", "), strings.Join(e.Available, ", "))
}

// Unwrap returns [ErrNoMatchingPlatform].
func (e *PlatformError) Unwrap() error { return ErrNoMatchingPlatform }
