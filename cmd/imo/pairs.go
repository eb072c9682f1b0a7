package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"strings"

	"github.com/imokit/imo"
)

// maxPairsFile bounds a list of pairs, which real bundles keep to
// hundreds of lines.
const maxPairsFile = 4 << 20

// parsePairs reads the list of pairs pull --from takes: either text with
// one "BASE FINAL" pair per line (blank lines and "#" comments ignored;
// BASE may be scratch), or JSON, an array of {"base": ..., "final": ...}
// objects. It checks the shape only; references are parsed when the images
// are resolved. Errors wrap [imo.ErrInvalidPairs] and name the line or
// element at fault.
func parsePairs(r io.Reader) (imo.Bundle, error) {
	data, err := io.ReadAll(io.LimitReader(r, maxPairsFile+1))
	if err != nil {
		return nil, fmt.Errorf("reading pairs: %w", err)
	}
	if len(data) > maxPairsFile {
		return nil, fmt.Errorf("%w: more than %d bytes", imo.ErrInvalidPairs, maxPairsFile)
	}
	var pairs imo.Bundle
	if trimmed := bytes.TrimSpace(data); len(trimmed) > 0 && trimmed[0] == '[' {
		if err := json.Unmarshal(trimmed, &pairs); err != nil {
			return nil, fmt.Errorf("%w: JSON: %v", imo.ErrInvalidPairs, err)
		}
		for n, p := range pairs {
			if err := p.Check(); err != nil {
				return nil, fmt.Errorf("%w: element %d: %v", imo.ErrInvalidPairs, n, err)
			}
		}
	} else if pairs, err = parsePairLines(data); err != nil {
		return nil, err
	}
	if len(pairs) == 0 {
		return nil, fmt.Errorf("%w: no pair listed", imo.ErrInvalidPairs)
	}
	seen := map[string]bool{}
	for _, p := range pairs {
		if seen[p.Final] {
			return nil, fmt.Errorf("%w: final image %s is listed twice", imo.ErrInvalidPairs, p.Final)
		}
		seen[p.Final] = true
	}
	return pairs, nil
}

// parsePairLines reads the text form: "BASE FINAL" per line.
func parsePairLines(data []byte) (imo.Bundle, error) {
	var pairs imo.Bundle
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
			return nil, fmt.Errorf("%w: line %d: want \"BASE FINAL\", got %d field(s)", imo.ErrInvalidPairs, line, len(fields))
		}
		p := imo.Pair{Base: fields[0], Final: fields[1]}
		if err := p.Check(); err != nil {
			return nil, fmt.Errorf("%w: line %d: %v", imo.ErrInvalidPairs, line, err)
		}
		pairs = append(pairs, p)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%w: %v", imo.ErrInvalidPairs, err)
	}
	return pairs, nil
}
