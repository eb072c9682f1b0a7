package main

import (
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/imokit/imo"
	"github.com/imokit/imo/archive"
	"github.com/spf13/cobra"
)

func newVetCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "vet ARCHIVE... DEST",
		Short: "Check that DEST holds every blob ARCHIVE leaves out",
		Long: `Check, before anything is sent, that the destination holds every blob the
archive references but leaves out, asking the registry about each one. DEST is
an image reference, or for a bundle a registry host[:port] with an optional
/prefix, or an OCI layout directory, oci:DIR[:TAG] (see imo push). Prints one
line per image, and each missing blob.
ARCHIVE is an archive file, or the volumes of a set (files in any order, or
their directory), checked piece by piece and repaired from parity first.
Exit status 0 when nothing is missing, 3 when blobs are missing (or volumes,
beyond what parity covers), 1 on other errors.`,
		Example: `  imo vet difference.tar site-registry:5000/app:v2
  imo vet bundle.tar site-registry:5000/mirror
  imo vet /media/dvd*/difference.*.tar site-registry:5000/app:v2`,
		Args: minArgs(2),
	}
	f := newFlags(cmd).credentials("dest").network().transfer().mounts().verify()
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		inc, err := f.incremental()
		if err != nil {
			return err
		}
		paths, dst := args[:len(args)-1], args[len(args)-1]
		a, err := archiveSource{paths: paths, scan: true, checks: f.checksSignatures()}.open(cmd)
		if err != nil {
			return err
		}
		defer a.Close()
		noteSigner(cmd.ErrOrStderr(), a, f.checksSignatures())
		results, err := inc.VetArchive(cmd.Context(), a, dst)
		noteTag(cmd.ErrOrStderr(), dst, results)
		if werr := printVet(cmd.OutOrStdout(), results); werr != nil && err == nil {
			err = werr
		}
		if err == nil && a.Plan() != nil {
			printInventories(cmd.OutOrStdout(), a.Plan().Inventories)
		}
		return err
	}
	return cmd
}

// printInventories says, for an archive built against inventories, that
// what they listed is still there.
func printInventories(w io.Writer, inventories []archive.PlanInventory) {
	for _, inv := range inventories {
		fmt.Fprintf(w, "the archive leaves out what the inventory of %s taken %s (%s ago) lists: still there\n",
			inv.Name(), inv.Taken.Format(time.RFC3339), time.Since(inv.Taken).Round(time.Second))
	}
}

// printVet prints what vet found for each image.
func printVet(w io.Writer, results []imo.ImageResult) error {
	var b strings.Builder
	for _, r := range results {
		var missing *imo.MissingBlobsError
		switch {
		case r.Err == nil:
			fmt.Fprintf(&b, "ok %s: holds every blob the archive leaves out\n", r.Place())
		case errors.As(r.Err, &missing):
			fmt.Fprintf(&b, "lacking %s: %d blob(s) missing\n", r.Place(), len(missing.Blobs))
			for _, m := range missing.Blobs {
				fmt.Fprintf(&b, "missing %s %d %s needed by %s\n", m.Digest, m.Size, m.MediaType, strings.Join(m.NeededBy, ", "))
			}
		default:
			fmt.Fprintf(&b, "failed %s\n", r.Place())
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}
