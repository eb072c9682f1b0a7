package main

import (
	"context"
	"crypto"
	"fmt"
	"io"
	"os"

	"github.com/imokit/imo/archive"
	"github.com/imokit/imo/volume"
	"github.com/spf13/cobra"
)

func newVerifyCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "verify ARCHIVE... | verify DIR",
		Short: "Check every byte of an archive or of a volume set, offline",
		Long: `Check, without a registry or a network, every byte of what is given against the
digests recorded: an archive file (its plan against index.json and the
manifests, every blob and delta it carries hashed), or the volumes of a set,
files in any order or their directory: every piece of every volume against
the volume's sums, each volume reported intact, damaged (which piece, holding
what) or missing, then the archive they make, read whole, as for a single
archive. With --verify-key (or ` + verifyKeyEnv + `), the plan's signature too.

Exit status: 0 when the files given are intact and make the whole archive
(volumes missing but covered by parity are reported, not failed); 1 when a
file given is damaged, even where parity could repair it, or the archive is
not what it says; 3 when volumes are missing or damaged beyond what parity
covers; 4 when the archive fails verification against the keys given.`,
		Example: `  imo verify difference.tar
  imo verify /media/dvd/difference.vol03-of-12.tar
  imo verify --verify-key release.pub incoming/`,
		Args: minArgs(1),
	}
	f := newFlags(cmd).verify()
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		keys, err := f.publicKeys()
		if err != nil {
			return err
		}
		out := cmd.OutOrStdout()
		if len(args) == 1 {
			if fi, err := os.Stat(args[0]); err == nil && fi.Mode().IsRegular() && !volume.IsVolume(args[0]) {
				a, err := archive.Open(args[0])
				if err != nil {
					return refusedIfInvalid(err, len(keys) > 0)
				}
				defer a.Close()
				return checkArchive(cmd.Context(), out, a, keys)
			}
		}
		s, err := volume.Open(args...)
		if err != nil {
			return err
		}
		defer s.Close()
		rep, err := s.Scan(cmd.Context())
		if err != nil {
			return err
		}
		printScan(out, rep)
		switch {
		case !rep.Whole && !rep.Intact():
			// Damage is the louder news: exit 1, saying what is missing too.
			return fmt.Errorf("%v; %v", errDamaged(rep), rep.Err())
		case !rep.Whole:
			return rep.Err()
		}
		a, err := s.Archive()
		if err != nil {
			return refusedIfInvalid(err, len(keys) > 0)
		}
		defer a.Close()
		if err := checkArchive(cmd.Context(), out, a, keys); err != nil {
			return err
		}
		if !rep.Intact() {
			return errDamaged(rep)
		}
		return nil
	}
	return cmd
}

// checkArchive validates the archive, or verifies it against keys, and
// says what it checked.
func checkArchive(ctx context.Context, w io.Writer, a *archive.Reader, keys []crypto.PublicKey) error {
	signed := ""
	if len(keys) > 0 {
		signer, err := a.Verify(ctx, keys)
		if err != nil {
			return err
		}
		signed = ", signed by the key " + archive.Fingerprint(signer)
	} else if err := a.Validate(ctx); err != nil {
		return err
	}
	plan, err := a.Check(ctx)
	if err != nil {
		return err
	}
	var carried, bytes int64
	for _, b := range plan.Blobs {
		if b.Included {
			carried++
			bytes += b.Size
		}
	}
	_, err = fmt.Fprintf(w, "ok %s: %d image(s), every manifest and the %d blobs it carries (%d bytes) match their digests%s\n",
		a.Name(), len(plan.Images), carried, bytes, signed)
	return err
}

// printScan prints what a scan found of each volume.
func printScan(w io.Writer, r *volume.Report) {
	for _, v := range r.Volumes {
		switch {
		case v.Missing():
			fmt.Fprintf(w, "missing  %s\n", v.Title(r))
		case len(v.Damaged) == 0:
			fmt.Fprintf(w, "intact   %s  %s\n", v.Title(r), v.Path)
		default:
			for _, d := range v.Damaged {
				fmt.Fprintf(w, "damaged  %s  %s: %s\n", v.Title(r), v.Path, d)
			}
		}
	}
	for _, p := range r.Ignored {
		fmt.Fprintf(w, "unusable %s: %v\n", p.Path, p.Err)
	}
	lacking := false
	for _, v := range r.Volumes {
		lacking = lacking || v.Missing() || len(v.Damaged) > 0
	}
	switch {
	case !lacking:
		fmt.Fprintf(w, "set %s: %d data and %d parity volumes, all present and intact\n", r.Set, r.DataVolumes, r.ParityVolumes)
	case r.Whole:
		fmt.Fprintf(w, "set %s: %d data and %d parity volumes; parity covers what is missing or damaged\n", r.Set, r.DataVolumes, r.ParityVolumes)
	default:
		fmt.Fprintf(w, "set %s: %d data and %d parity volumes; more is missing or damaged than parity covers\n", r.Set, r.DataVolumes, r.ParityVolumes)
	}
}

// errDamaged says which files given are damaged or unusable.
func errDamaged(r *volume.Report) error {
	n := len(r.Ignored)
	for _, v := range r.Volumes {
		if len(v.Damaged) > 0 {
			n++
		}
	}
	return fmt.Errorf("%d file(s) given are damaged or unusable volumes of set %s (listed above)", n, r.Set)
}
