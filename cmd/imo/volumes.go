package main

import (
	"cmp"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/imokit/imo/archive"
	"github.com/imokit/imo/internal/reference"
	"github.com/imokit/imo/volume"
	"github.com/spf13/cobra"
)

// minArgs is cobra.MinimumNArgs reporting a usage error.
func minArgs(n int) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) < n {
			return usagef("%s takes at least %d argument(s), got %d", cmd.Name(), n, len(args))
		}
		return nil
	}
}

// archiveSource is where a command reads an archive from.
type archiveSource struct {
	paths []string
	// tempDir receives an archive spooled from standard input.
	tempDir string
	// scan checks every piece of a volume set before anything is read.
	scan bool
	// checks is set when the archive must verify against keys: an archive
	// that does not read is then refused.
	checks bool
}

// open opens the archive: "-" (standard input, spooled), one archive file,
// or the volumes of a set, files in any order or their directory. What a
// scan finds missing or damaged but covered by parity is said on stderr.
func (s archiveSource) open(cmd *cobra.Command) (*archive.Reader, error) {
	if len(s.paths) == 1 && s.paths[0] == "-" {
		a, err := archive.Spool(cmd.Context(), cmd.InOrStdin(), cmp.Or(s.tempDir, os.TempDir()), "standard input")
		return a, refusedIfInvalid(err, s.checks)
	}
	paths := make([]string, len(s.paths))
	for k, p := range s.paths {
		if p == "-" {
			return nil, usagef("- (standard input) is an archive on its own: it cannot be one of several volumes")
		}
		paths[k] = strings.TrimPrefix(p, reference.OCIArchivePrefix) // as skopeo users write an OCI layout tar
	}
	a, rep, err := volume.OpenArchive(cmd.Context(), s.scan, paths...)
	if rep != nil {
		noteRepairs(cmd.ErrOrStderr(), rep)
	}
	return a, refusedIfInvalid(err, s.checks)
}

// noteRepairs says which volumes of a set are missing or damaged, and which
// files given were not used.
func noteRepairs(w io.Writer, r *volume.Report) {
	for _, p := range r.Ignored {
		fmt.Fprintf(w, "imo: not using %s: %v\n", p.Path, p.Err)
	}
	if !r.Whole {
		return
	}
	for _, v := range r.Volumes {
		if v.Missing() {
			fmt.Fprintf(w, "imo: %s of set %s is missing: rebuilt from parity\n", v.Title(r), r.Set)
		}
		for _, d := range v.Damaged {
			fmt.Fprintf(w, "imo: %s (%s) is damaged in %s: rebuilt from parity\n", v.Title(r), v.Path, d)
		}
	}
}
