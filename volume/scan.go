package volume

import (
	"context"
	"fmt"
	"runtime"
	"slices"
	"strings"

	"golang.org/x/sync/errgroup"
)

// Report is what a scan of a volume set found.
type Report struct {
	// Set identifies the set; DataVolumes and ParityVolumes are how many
	// volumes of each kind it has.
	Set           string
	DataVolumes   int
	ParityVolumes int
	// Volumes are every volume of the set, data volumes first.
	Volumes []VolumeState
	// Ignored are the files given that could not serve as volumes.
	Ignored []Problem
	// Whole is true when the archive can be read whole: in every stripe,
	// the pieces missing or damaged are no more than parity covers.
	Whole bool
}

// VolumeState is what a scan found of one volume.
type VolumeState struct {
	Kind   string
	Number int
	// Path is the file that holds the volume; empty when it is missing.
	Path string
	// Damaged are the pieces whose bytes do not match the volume's sums.
	Damaged []DamagedPiece
}

// Title names the volume for people: "data volume 2 of 5".
func (v VolumeState) Title(r *Report) string {
	n := r.DataVolumes
	if v.Kind == KindParity {
		n = r.ParityVolumes
	}
	return fmt.Sprintf("%s volume %d of %d", v.Kind, v.Number, n)
}

// Missing reports whether the volume was not given.
func (v VolumeState) Missing() bool { return v.Path == "" }

// DamagedPiece is a piece of a volume whose bytes are not what its sums
// say: Size bytes at At in the volume's payload, holding Holds.
type DamagedPiece struct {
	Piece int // from 1
	At    int64
	Size  int64
	Holds []Held
}

// String says where the piece is and what it holds.
func (d DamagedPiece) String() string {
	s := fmt.Sprintf("piece %d (payload bytes %d-%d)", d.Piece, d.At, d.At+d.Size-1)
	var holds []string
	for _, h := range d.Holds {
		holds = append(holds, fmt.Sprintf("%s bytes %d-%d", h.Name, h.From, h.From+h.Size-1))
	}
	if len(holds) > 0 {
		s += ": " + strings.Join(holds, ", ")
	}
	return s
}

// Intact reports whether every volume given is undamaged and every file
// given served as a volume.
func (r *Report) Intact() bool {
	for _, v := range r.Volumes {
		if len(v.Damaged) > 0 {
			return false
		}
	}
	return len(r.Ignored) == 0
}

// Err is nil for a set that can be read whole, and otherwise an
// [*IncompleteError] naming what is missing and damaged.
func (r *Report) Err() error {
	if r.Whole {
		return nil
	}
	var lost []string
	for _, v := range r.Volumes {
		if v.Missing() {
			lost = append(lost, v.Title(r)+" missing")
		}
		for _, d := range v.Damaged {
			lost = append(lost, fmt.Sprintf("%s (%s) damaged in piece %d", v.Title(r), v.Path, d.Piece))
		}
	}
	return &IncompleteError{Set: r.Set, Lost: lost, Parity: r.ParityVolumes}
}

// Scan reads every piece of every volume of the set and checks it against
// its volume's sums, a few volumes at a time, and reports what is missing
// and what is damaged, and whether parity covers it. Reads that follow
// skip the pieces found damaged.
func (s *Set) Scan(ctx context.Context) (*Report, error) {
	r := &Report{Set: s.h.Set, DataVolumes: s.h.DataVolumes, ParityVolumes: s.h.ParityVolumes, Ignored: s.ignored}
	all := slices.Concat(s.data, s.parity)
	damaged := make([][]int, len(all))
	eg, ectx := errgroup.WithContext(ctx)
	eg.SetLimit(runtime.GOMAXPROCS(0))
	for i, v := range all {
		if v == nil {
			continue
		}
		eg.Go(func() error {
			buf := make([]byte, 256<<10)
			for j := range v.h.Pieces() {
				if err := ectx.Err(); err != nil {
					return err
				}
				if !s.checkPiece(v, j, buf) {
					damaged[i] = append(damaged[i], j)
				}
			}
			return nil
		})
	}
	if err := eg.Wait(); err != nil {
		return nil, err
	}
	stripes := int((s.h.Stride + s.h.PieceSize - 1) / s.h.PieceSize)
	lost := make([]int, stripes) // the pieces each stripe lacks
	for i, v := range all {
		kind, number := KindData, i+1
		if i >= s.h.DataVolumes {
			kind, number = KindParity, i+1-s.h.DataVolumes
		}
		st := VolumeState{Kind: kind, Number: number}
		size := s.h.Stride
		if kind == KindData {
			size = s.dataSize(number)
		}
		if v == nil {
			for j := range stripes {
				if s.pieceLen(size, j) > 0 {
					lost[j]++
				}
			}
		} else {
			st.Path = v.path
			for _, j := range damaged[i] {
				lost[j]++
				at := int64(j) * s.h.PieceSize
				st.Damaged = append(st.Damaged, DamagedPiece{Piece: j + 1, At: at, Size: s.pieceLen(size, j), Holds: within(v.h.Holds, at, s.pieceLen(size, j))})
			}
		}
		r.Volumes = append(r.Volumes, st)
	}
	r.Whole = !slices.ContainsFunc(lost, func(n int) bool { return n > s.h.ParityVolumes })
	return r, nil
}

// within are the parts of holds in [at, at+size) of a payload.
func within(holds []Held, at, size int64) []Held {
	var out []Held
	for _, h := range holds {
		from, to := max(at, h.At), min(at+size, h.At+h.Size)
		if to > from {
			out = append(out, Held{Name: h.Name, From: h.From + from - h.At, Size: to - from, At: from})
		}
	}
	return out
}
