package main

import (
	"errors"
	"fmt"
	"strings"

	"github.com/imokit/imo"
	"github.com/spf13/cobra"
)

func newVetCmd(g *globalFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "vet ARCHIVE DEST",
		Short: "Check that DEST's repository holds every blob ARCHIVE leaves out",
		Long: `Check, before anything is sent, that the repository of DEST holds every blob
the archive references but leaves out, asking the registry about each one.
Exit status 0 when nothing is missing, 3 when blobs are missing (each is
listed on standard output), 1 on other errors.`,
		Example: `  imo vet difference.tar site-registry:5000/app:v2`,
		Args:    exactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			inc, err := newIncremental(cmd, g, pushSide)
			if err != nil {
				return err
			}
			err = inc.PushVet(cmd.Context(), args[0], args[1])
			var missing *imo.MissingBlobsError
			if errors.As(err, &missing) {
				for _, b := range missing.Blobs {
					fmt.Fprintf(cmd.OutOrStdout(), "missing %s %d %s needed by %s\n", b.Digest, b.Size, b.MediaType, strings.Join(b.NeededBy, ", "))
				}
				return fmt.Errorf("%s lacks %d blob(s) the archive leaves out: %w", missing.Repository, len(missing.Blobs), imo.ErrMissingBlobs)
			}
			if err != nil {
				return err
			}
			_, err = fmt.Fprintf(cmd.OutOrStdout(), "%s holds every blob %s leaves out\n", args[1], args[0])
			return err
		},
	}
}
