// Package volume splits an imo archive into a set of volume files that fit
// transfer media (discs, FAT32 sticks, gateways with a file size limit),
// with optional Reed–Solomon parity volumes, and reads such a set back as
// the archive it holds, in place, repairing missing or damaged volumes
// from parity on the fly.
//
// A volume is a tar holding, in order: imo-volume.json (its [Header]: the
// set it belongs to, which volume of how many it is, and what it holds),
// imo.json (the archive's plan, in every volume), imo.json.sig when the
// archive is signed, its payload (imo-volume.data: a run of the archive's
// bytes; or imo-volume.parity), and imo-volume.sums: the SHA-256 of each
// piece of the payload, one per line. The data volumes' payloads, end to
// end, are the archive, byte for byte. Parity volume p holds, for each
// stripe (the same piece of every data volume, zero-padded), the p-th
// Reed–Solomon parity shard, so that any as many volumes as there are
// parity volumes may be missing or damaged.
package volume

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"sort"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/imokit/imo/archive"
)

// Version is the version of the volume format this package writes.
const Version = 1

// The entries of a volume, in order.
const (
	HeaderFile = "imo-volume.json"
	DataFile   = "imo-volume.data"
	ParityFile = "imo-volume.parity"
	SumsFile   = "imo-volume.sums"
)

// The kinds of volume.
const (
	KindData   = "data"
	KindParity = "parity"
)

// Limits of a volume set.
const (
	// MinSize is the smallest volume size.
	MinSize = 64 << 10
	// MaxDataVolumes bounds the data volumes of a set.
	MaxDataVolumes = 9999
	// MaxShards bounds the data and parity volumes together of a set with
	// parity, so that repairing a stripe holds at most MaxShards pieces.
	MaxShards = 256
	// maxHeader bounds a volume's header when it is read.
	maxHeader = 16 << 20
	// repairBudget bounds the pieces one stripe holds in memory, data and
	// parity together: it decides the piece size of a set with parity.
	repairBudget = 32 << 20
	// maxPiece and minPiece bound the piece size.
	maxPiece = 1 << 20
	minPiece = 16 << 10
	// sumLine is the length of one line of a volume's sums: 64 hex digits
	// and a newline.
	sumLine = 2*sha256.Size + 1
)

// ErrInvalid means a file is not a volume of an imo volume set, or its
// header does not read.
var ErrInvalid = errors.New("invalid volume")

// Header is a volume's imo-volume.json: enough to place the volume in its
// set, check it alone, and say what it holds.
type Header struct {
	Version int `json:"imoVolumeVersion"`
	// Set identifies the volume set: the same for every volume of one
	// split of one archive.
	Set string `json:"set"`
	// Plan is the sha256 of the archive's imo.json, which every volume
	// carries.
	Plan v1.Hash `json:"plan"`
	// Kind is KindData or KindParity, and Number the volume's place among
	// its kind, from 1.
	Kind   string `json:"kind"`
	Number int    `json:"number"`
	// DataVolumes and ParityVolumes are how many of each the set has.
	DataVolumes   int `json:"dataVolumes"`
	ParityVolumes int `json:"parityVolumes"`
	// VolumeSize is the size no volume of the set exceeds.
	VolumeSize int64 `json:"volumeSize"`
	// ArchiveSize is the size of the archive the data volumes hold.
	ArchiveSize int64 `json:"archiveSize"`
	// Stride is the payload size of every data volume but the last, and of
	// every parity volume.
	Stride int64 `json:"stride"`
	// PieceSize is the size of the pieces a payload is hashed in, and of
	// the stripes parity is computed over.
	PieceSize int64 `json:"pieceSize"`
	// Offset is where a data volume's payload starts in the archive, and
	// Size how many bytes the payload holds.
	Offset int64 `json:"offset"`
	Size   int64 `json:"size"`
	// Holds are the archive's files whose content a data volume holds,
	// wholly or in part.
	Holds []Held `json:"holds,omitempty"`
}

// Held is the part of an archive file that a volume holds: Size bytes from
// From in the file, at At in the volume's payload.
type Held struct {
	Name string `json:"name"`
	From int64  `json:"from"`
	Size int64  `json:"size"`
	At   int64  `json:"at"`
}

// Pieces is how many pieces the volume's payload is hashed in.
func (h *Header) Pieces() int {
	return int((h.Size + h.PieceSize - 1) / h.PieceSize)
}

// Title names the volume for people: "data volume 2 of 5".
func (h *Header) Title() string {
	n := h.DataVolumes
	if h.Kind == KindParity {
		n = h.ParityVolumes
	}
	return fmt.Sprintf("%s volume %d of %d", h.Kind, h.Number, n)
}

// check refuses a header whose numbers do not make a volume set.
func (h *Header) check() error {
	switch {
	case h.Version != Version:
		return fmt.Errorf("volume format version %d: this imo reads version %d", h.Version, Version)
	case h.Kind != KindData && h.Kind != KindParity:
		return fmt.Errorf("kind %q", h.Kind)
	case h.DataVolumes < 1 || h.DataVolumes > MaxDataVolumes || h.ParityVolumes < 0 || h.ParityVolumes > 0 && h.DataVolumes+h.ParityVolumes > MaxShards:
		return fmt.Errorf("%d data and %d parity volumes", h.DataVolumes, h.ParityVolumes)
	case h.Kind == KindData && (h.Number < 1 || h.Number > h.DataVolumes), h.Kind == KindParity && (h.Number < 1 || h.Number > h.ParityVolumes):
		return fmt.Errorf("%s volume %d of a set of %d data and %d parity volumes", h.Kind, h.Number, h.DataVolumes, h.ParityVolumes)
	case h.PieceSize < minPiece || h.PieceSize > maxPiece:
		return fmt.Errorf("piece size %d", h.PieceSize)
	case h.ParityVolumes > 0 && int64(h.DataVolumes+h.ParityVolumes)*h.PieceSize > 2*repairBudget:
		// A repair holds a piece of every volume: the writer keeps a stripe
		// within the budget (twice it, where the count of data volumes grew
		// after the piece size was chosen).
		return fmt.Errorf("piece size %d for %d volumes: a stripe beyond the %d-byte repair budget", h.PieceSize, h.DataVolumes+h.ParityVolumes, 2*repairBudget)
	case h.Stride < 1 || h.ArchiveSize < 1 || h.VolumeSize < MinSize || h.Stride > h.VolumeSize:
		return fmt.Errorf("stride %d, archive size %d, volume size %d", h.Stride, h.ArchiveSize, h.VolumeSize)
	case (h.ArchiveSize+h.Stride-1)/h.Stride != int64(h.DataVolumes):
		return fmt.Errorf("%d data volumes of %d bytes cannot hold an archive of %d bytes", h.DataVolumes, h.Stride, h.ArchiveSize)
	}
	want := shape{archiveSize: h.ArchiveSize, stride: h.Stride, data: h.DataVolumes}
	off, size := want.payload(h.Kind, h.Number)
	if h.Offset != off || h.Size != size {
		return fmt.Errorf("%s holds %d bytes at %d; its set places %d bytes at %d", h.Title(), h.Size, h.Offset, size, off)
	}
	return nil
}

// sameSet reports whether two volumes' headers describe one set.
func sameSet(a, b *Header) bool {
	return a.Set == b.Set && a.Plan == b.Plan && a.DataVolumes == b.DataVolumes && a.ParityVolumes == b.ParityVolumes &&
		a.VolumeSize == b.VolumeSize && a.ArchiveSize == b.ArchiveSize && a.Stride == b.Stride && a.PieceSize == b.PieceSize
}

// shape is how a set cuts an archive: every data volume's payload but the
// last is stride bytes.
type shape struct {
	archiveSize int64
	stride      int64
	data        int
}

// payload is where the payload of volume number of kind sits in the
// archive, and its size; a parity payload is stride bytes.
func (s shape) payload(kind string, number int) (offset, size int64) {
	if kind == KindParity {
		return 0, s.stride
	}
	offset = int64(number-1) * s.stride
	return offset, min(s.stride, s.archiveSize-offset)
}

// epoch dates every entry of a volume, as archives are dated.
var epoch = time.Unix(0, 0).UTC()

// split is a volume set's plan: the archive it cuts and how.
type split struct {
	shape
	entries    []archive.Entry
	plan, sig  []byte
	planDigest v1.Hash
	size       int64
	parity     int
	piece      int64
	set        string
}

// newSplit plans the volume set of an archive of archiveSize bytes whose
// files are entries, with the plan and signature every volume carries:
// volumes of at most size bytes, and parity parity volumes.
func newSplit(archiveSize int64, entries []archive.Entry, plan, sig []byte, size int64, parity int) (*split, error) {
	switch {
	case size < MinSize:
		return nil, fmt.Errorf("volume size %d: the smallest is %d bytes (64 KiB)", size, MinSize)
	case parity < 0:
		return nil, fmt.Errorf("parity %d: want 0 or more parity volumes", parity)
	case len(plan) == 0:
		return nil, errors.New("the archive has no plan: imo splits the archives it writes")
	}
	sorted := append([]archive.Entry(nil), entries...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].Offset < sorted[j].Offset })
	s := &split{entries: sorted, plan: plan, sig: sig, size: size, parity: parity}
	s.archiveSize = archiveSize
	s.planDigest, _, _ = v1.SHA256(bytes.NewReader(plan))
	// The signature too: an ECDSA signature differs each time, so two
	// splits of one signed archive are two sets, whose volumes a repair
	// must not mix.
	sum := sha256.Sum256(fmt.Appendf(nil, "imo volume set\n%s\n%x\n%d %d %d\n", s.planDigest, sha256.Sum256(sig), archiveSize, size, parity))
	s.set = hex.EncodeToString(sum[:8])
	s.piece = maxPiece
	// The piece size depends on how many volumes there are, which depends
	// a little on the piece size (through the sums): plan twice.
	for range 2 {
		if err := s.fit(); err != nil {
			return nil, err
		}
		if parity == 0 {
			return s, nil
		}
		if s.data+parity > MaxShards {
			return nil, fmt.Errorf("%d data volumes and %d parity volumes: a set with parity has at most %d volumes in all; choose a larger volume size", s.data, parity, MaxShards)
		}
		s.piece = pieceSize(s.data + parity)
	}
	if err := s.fit(); err != nil {
		return nil, err
	}
	if s.data+parity > MaxShards {
		return nil, fmt.Errorf("%d data volumes and %d parity volumes: a set with parity has at most %d volumes in all; choose a larger volume size", s.data, parity, MaxShards)
	}
	return s, nil
}

// pieceSize is the piece size of a set of shards volumes with parity: a
// stripe of all of them fits the repair budget.
func pieceSize(shards int) int64 {
	p := int64(maxPiece)
	for p > minPiece && int64(shards)*p > repairBudget {
		p /= 2
	}
	return p
}

// fit finds the largest stride with which every volume, its header, plan,
// signature, payload and sums, fits in the volume size.
func (s *split) fit() error {
	s.stride = s.size - s.fixed()
	for range 64 {
		if s.stride < 1 {
			return fmt.Errorf("volume size %d is too small: every volume carries the archive's plan (%d bytes) and its own description", s.size, len(s.plan))
		}
		s.data = int((s.archiveSize + s.stride - 1) / s.stride)
		if s.data > MaxDataVolumes {
			return fmt.Errorf("the archive of %d bytes would take %d volumes of %d bytes; at most %d: choose a larger volume size", s.archiveSize, s.data, s.size, MaxDataVolumes)
		}
		var over int64
		for n := 1; n <= s.data; n++ {
			over = max(over, s.total(s.header(KindData, n))-s.size)
		}
		if s.parity > 0 {
			over = max(over, s.total(s.header(KindParity, s.parity))-s.size)
		}
		if over <= 0 {
			return nil
		}
		s.stride -= over
	}
	return fmt.Errorf("volume size %d: no stride fits", s.size)
}

// fixed is a first guess at what a volume holds besides its payload.
func (s *split) fixed() int64 {
	return int64(len(s.plan)+len(s.sig)) + 6*512 + 1024 + 2048
}

// header is the header of volume number of kind.
func (s *split) header(kind string, number int) *Header {
	h := &Header{Version: Version, Set: s.set, Plan: s.planDigest, Kind: kind, Number: number,
		DataVolumes: s.data, ParityVolumes: s.parity, VolumeSize: s.size, ArchiveSize: s.archiveSize,
		Stride: s.stride, PieceSize: s.piece}
	h.Offset, h.Size = s.payload(kind, number)
	if kind == KindData {
		h.Holds = s.holds(h.Offset, h.Size)
	}
	return h
}

// holds lists the parts of the archive's files in [off, off+size).
func (s *split) holds(off, size int64) []Held {
	end := off + size
	i := sort.Search(len(s.entries), func(i int) bool { return s.entries[i].Offset+s.entries[i].Size > off })
	var out []Held
	for ; i < len(s.entries) && s.entries[i].Offset < end; i++ {
		e := s.entries[i]
		from, to := max(off, e.Offset), min(end, e.Offset+e.Size)
		if to > from {
			out = append(out, Held{Name: e.Name, From: from - e.Offset, Size: to - from, At: from - off})
		}
	}
	return out
}

// total is the size of a volume with header h.
func (s *split) total(h *Header) int64 {
	l, err := s.layout(h)
	if err != nil {
		return s.size + 1
	}
	return l.total
}

// volumeLayout is where a volume's parts sit in its file.
type volumeLayout struct {
	prefix    []byte // the tar up to the payload's content
	payloadAt int64  // len(prefix)
	sumsAt    int64  // where the sums' content starts
	tail      []byte // the padding after the payload and the sums' tar header
	total     int64
}

// layout lays out the volume with header h: the bytes before the payload
// and around the sums are fixed, the payload and sums are written later.
func (s *split) layout(h *Header) (*volumeLayout, error) {
	hb, err := json.MarshalIndent(h, "", "  ")
	if err != nil {
		return nil, err
	}
	hb = append(hb, '\n')
	var prefix bytes.Buffer
	add := func(name string, size int64, content []byte) error {
		if err := writeHeader(&prefix, name, size); err != nil {
			return err
		}
		if content != nil {
			prefix.Write(content)
			prefix.Write(padding(int64(len(content))))
		}
		return nil
	}
	if err := add(HeaderFile, int64(len(hb)), hb); err != nil {
		return nil, err
	}
	if err := add(archive.PlanFile, int64(len(s.plan)), s.plan); err != nil {
		return nil, err
	}
	if s.sig != nil {
		if err := add(archive.SignatureFile, int64(len(s.sig)), s.sig); err != nil {
			return nil, err
		}
	}
	payloadName := DataFile
	if h.Kind == KindParity {
		payloadName = ParityFile
	}
	if err := add(payloadName, h.Size, nil); err != nil {
		return nil, err
	}
	var tail bytes.Buffer
	tail.Write(padding(h.Size))
	sums := int64(h.Pieces()) * sumLine
	if err := writeHeader(&tail, SumsFile, sums); err != nil {
		return nil, err
	}
	l := &volumeLayout{prefix: prefix.Bytes(), payloadAt: int64(prefix.Len()), tail: tail.Bytes()}
	l.sumsAt = l.payloadAt + h.Size + int64(tail.Len())
	l.total = l.sumsAt + sums + int64(len(padding(sums))) + 1024
	return l, nil
}

// writeHeader writes the tar header of a regular file.
func writeHeader(w *bytes.Buffer, name string, size int64) error {
	return tar.NewWriter(w).WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Size: size, Mode: 0o644, ModTime: epoch})
}

// padding is the zeros that fill n bytes up to the tar block size.
func padding(n int64) []byte {
	if r := n % 512; r != 0 {
		return make([]byte, 512-r)
	}
	return nil
}

// Names are the file names of a set of data and parity volumes split from
// out: for out "difference.tar", "difference.vol01-of-12.tar" and
// "difference.par1-of-2.tar".
func Names(out string, data, parity int) (dataNames, parityNames []string) {
	stem := strings.TrimSuffix(out, filepath.Ext(out))
	if filepath.Ext(out) != ".tar" {
		stem = out
	}
	name := func(kind string, n, of int) string {
		w := len(fmt.Sprint(of))
		return fmt.Sprintf("%s.%s%0*d-of-%d.tar", stem, kind, w, n, of)
	}
	for n := 1; n <= data; n++ {
		dataNames = append(dataNames, name("vol", n, data))
	}
	for n := 1; n <= parity; n++ {
		parityNames = append(parityNames, name("par", n, parity))
	}
	return dataNames, parityNames
}
