package imo

import (
	"fmt"
	"strings"
)

// Scratch is the base that stands for "nothing": pulling against it
// carries the whole final image.
const Scratch = "scratch"

// Images says what [Incremental.Resolve] pulls: one [Pair], or a [Bundle]
// of pairs. Both implement it; no other type does.
type Images interface {
	pairs() []Pair
	bundle() bool
}

// Pair is one image to pull: the final image the far side needs and the
// base it is expected to hold ([Scratch] for none). As [Images], it pulls
// an archive of that one image (and, with [WithReferrers], what refers to
// it), whose destination is an image reference.
type Pair struct {
	Base  string `json:"base"`
	Final string `json:"final"`
}

func (p Pair) pairs() []Pair { return []Pair{p} }
func (Pair) bundle() bool    { return false }

// Bundle is several images pulled into one archive: an index.json entry
// per final image, in order, every blob stored once, and a blob left out
// only when the base of every image that uses it has it. A bundle's
// destination is always a target (a registry and a prefix), however many
// images it holds.
type Bundle []Pair

func (b Bundle) pairs() []Pair { return b }
func (Bundle) bundle() bool    { return true }

// Check reports a pair with a missing or blank reference, or scratch as
// its final image. References themselves are parsed when the images are
// resolved.
func (p Pair) Check() error {
	switch {
	case strings.TrimSpace(p.Base) == "":
		return fmt.Errorf("no base image (use %q for none)", Scratch)
	case strings.TrimSpace(p.Final) == "":
		return fmt.Errorf("no final image")
	case p.Final == Scratch:
		return fmt.Errorf("the final image cannot be %q", Scratch)
	}
	return nil
}
