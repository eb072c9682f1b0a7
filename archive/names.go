// Package archive reads and writes imo's archives: an OCI image layout in a
// plain tar that may leave out blobs the far side already holds, with imo's
// plan of what it carries and what it leaves out ([PlanFile]).
//
// [Build] lays an archive out from its contents and writes it, streamed in
// order or each blob straight into its place; [Open] and [Spool] read one
// back, checking every entry, and [Reader.Check] checks every manifest and
// describes the archive. The package holds the format alone: it makes no
// network request, and a program can read and check an archive with it and
// nothing else of imo.
package archive

import (
	"path"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/imokit/imo/internal/verify"
)

// The names of the files in an archive. An archive is an OCI image layout
// in a plain tar; imo adds PlanFile, DockerManifestFile for whole
// single-platform images, and DeltasDir for sub-layer deltas.
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
	// DeltasDir holds the sub-layer deltas of layers the archive carries
	// as deltas, by the layer's digest. Other tools ignore it.
	DeltasDir = "imo-deltas"
	// blobsDir holds every blob the archive carries, by digest.
	blobsDir = "blobs"
)

// RefNameAnnotation names the reference of an index.json entry.
const RefNameAnnotation = "org.opencontainers.image.ref.name"

// BlobName is where the blob h lives in an archive.
func BlobName(h v1.Hash) string { return path.Join(blobsDir, h.Algorithm, h.Hex) }

// DeltaName is where the sub-layer delta of the layer h lives in an archive.
func DeltaName(h v1.Hash) string { return path.Join(DeltasDir, h.Algorithm, h.Hex) }

// ErrDigestMismatch means bytes read from an archive do not hash to the
// digest, or do not have the size, that their descriptor promises.
// [*DigestMismatchError] wraps it.
var ErrDigestMismatch = verify.ErrMismatch

// DigestMismatchError reports content whose digest or size differs from its
// descriptor: Source says where it was read, Want and WantSize what the
// descriptor promised, Got and GotSize what was read (Got is empty when
// the size was wrong). It wraps [ErrDigestMismatch].
type DigestMismatchError = verify.MismatchError
