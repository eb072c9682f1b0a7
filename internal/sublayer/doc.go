// Package sublayer expresses a container image layer as a delta against the
// layers of a base image, and rebuilds the exact compressed layer blob from
// that delta on the other side, so that the rebuilt blob keeps its digest.
//
// A delta carries the layer's tar headers and padding byte for byte, file
// contents as references (by sha256) to contents of the base layers, binary
// patches against the base file at the same path, or literal bytes, and a
// [Recipe] that recompresses the rebuilt tar into the original blob. The
// side that makes a delta proves the round trip before it uses one
// ([Prepare]); the side that applies it checks its encoders and the digest
// of what it rebuilt ([Rebuild]).
//
// # Sides
//
// The side that has both images (it pulls from a registry) adds the base
// layers to a [Base] with [Base.AddLayer], then calls [Prepare] for each
// layer of the final image that the base lacks. Prepare detects the blob's
// recipe, encodes the delta ([Encode]) and proves the round trip: one
// recompression of the blob's tar, on cores of its own, must give the blob
// byte for byte, and the delta, applied with the code [Rebuild] runs, must
// give that tar (by digest). It writes the delta only if both hold and the
// delta is at most half the blob. Any error means: ship the whole blob.
// [StartProof] and [PrepareWith] split Prepare so that the recompression,
// its longest step, runs while the base layers are still being added.
//
// # Memory
//
// Memory does not grow with the layers: the contents and the index of a
// Base are on disk, contents larger than 1 MiB are compared with the base
// or staged on disk as they stream, patches are made and applied in
// segments of 512 KiB against dictionaries of at most 1 MiB, and a body of
// more than 8 MiB of operations is compressed with a window of 2 MiB.
//
// The side that has only the base (it pushes to a registry) reads the
// delta's [Header] with [ReadHeader] to learn which base layers it needs,
// adds them to a Base, and calls [Rebuild], which refuses when this build's
// encoders are not the pinned ones ([CheckEncoders], [CheckRecipe]) and
// checks the rebuilt blob's digest.
//
// # Encoders
//
// Supported: Go's compress/gzip at levels 1–9 (Docker, BuildKit,
// containerd at 6; go-containerregistry at 1; crane flatten at 9),
// klauspost gzip and pgzip with 1 MiB blocks at levels 1–9 (default 5, as
// containers/image uses), klauspost zstd in streaming mode at its four
// levels (default as containerd and BuildKit use), and uncompressed tars.
// zlib, pigz, the JDK, multi-member gzip (eStargz) and zstd:chunked are not
// supported: [DetectRecipe] reports [ErrUnsupportedEncoder].
//
// # Delta format
//
// A delta is self-describing: the header names the blob, its diffID, the
// recipe and the base layers needed, before any content. Version 1:
//
//	magic    "imo-sublayer\x00\x01" (14 bytes)
//	hdrlen   uvarint, at most 1 MiB
//	header   JSON of [Header]
//	body     one zstd stream of operations:
//	  0x00                         end
//	  0x01 n:uvarint bytes[n]      raw tar bytes (headers, padding, trailer)
//	  0x02 sha256[32] n:uvarint    n bytes of the base content with this sha256
//	  0x03 sha256[32] n:uvarint m:uvarint patch[m]
//	                               n bytes decoded from a zstd frame whose raw
//	                               dictionary is the base content with this sha256
//	  0x04 n:uvarint bytes[n]      literal content
//
// Version 2 (magic "imo-sublayer\x00\x02") adds one operation, for patches
// against base files larger than one dictionary; an encoder writes version
// 2 only for deltas that hold it, so that the others stay readable by
// builds that know version 1 only:
//
//	0x05 sha256[32] off:uvarint d:uvarint n:uvarint m:uvarint patch[m]
//	                             n bytes (at most 4 MiB) decoded from a zstd
//	                             frame whose raw dictionary is the d bytes
//	                             (at most 8 MiB) at offset off of the base
//	                             content with this sha256
//
// Raw and literal operations hold at most 1 MiB each; the rebuilt tar is the
// concatenation of every operation's output and must hash to the header's
// DiffID.
package sublayer
