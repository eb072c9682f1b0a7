package imo

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"strings"
)

// Pair is one image of a bundle: the final image the far side needs and
// the base it is expected to hold ([Scratch] for none).
type Pair struct {
	Base  string `json:"base"`
	Final string `json:"final"`
}

// maxPairsFile bounds a list of pairs, which real bundles keep to
// hundreds of lines.
const maxPairsFile = 4 << 20

// ParsePairs reads a list of pairs: either text with one "BASE FINAL" pair
// per line (blank lines and "#" comments ignored; BASE may be [Scratch]),
// or JSON, an array of {"base": ..., "final": ...} objects. It checks the
// shape only; references are parsed when the images are resolved. Errors
// wrap [ErrInvalidPairs] and name the line or element at fault.
func ParsePairs(r io.Reader) ([]Pair, error) {
	data, err := io.ReadAll(io.LimitReader(r, maxPairsFile+1))
	if err != nil {
		return nil, fmt.Errorf("reading pairs: %w", err)
	}
	if len(data) > maxPairsFile {
		return nil, fmt.Errorf("%w: more than %d bytes", ErrInvalidPairs, maxPairsFile)
	}
	var pairs []Pair
	if trimmed := bytes.TrimSpace(data); len(trimmed) > 0 && trimmed[0] == '[' {
		if err := json.Unmarshal(trimmed, &pairs); err != nil {
			return nil, fmt.Errorf("%w: JSON: %v", ErrInvalidPairs, err)
		}
		for n, p := range pairs {
			if err := p.check(); err != nil {
				return nil, fmt.Errorf("%w: element %d: %v", ErrInvalidPairs, n, err)
			}
		}
	} else {
		sc := bufio.NewScanner(bytes.NewReader(data))
		sc.Buffer(nil, maxPairsFile)
		for line := 1; sc.Scan(); line++ {
			text, _, _ := strings.Cut(sc.Text(), "#")
			fields := strings.Fields(text)
			switch len(fields) {
			case 0:
				continue
			case 2:
			default:
				return nil, fmt.Errorf("%w: line %d: want \"BASE FINAL\", got %d field(s)", ErrInvalidPairs, line, len(fields))
			}
			p := Pair{Base: fields[0], Final: fields[1]}
			if err := p.check(); err != nil {
				return nil, fmt.Errorf("%w: line %d: %v", ErrInvalidPairs, line, err)
			}
			pairs = append(pairs, p)
		}
		if err := sc.Err(); err != nil {
			return nil, fmt.Errorf("%w: %v", ErrInvalidPairs, err)
		}
	}
	if len(pairs) == 0 {
		return nil, fmt.Errorf("%w: no pair listed", ErrInvalidPairs)
	}
	seen := map[string]bool{}
	for _, p := range pairs {
		if seen[p.Final] {
			return nil, fmt.Errorf("%w: final image %s is listed twice", ErrInvalidPairs, p.Final)
		}
		seen[p.Final] = true
	}
	return pairs, nil
}

// check reports a pair with a missing or blank reference.
func (p Pair) check() error {
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
