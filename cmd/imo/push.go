package main

import (
	"fmt"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/spf13/cobra"
)

func newPushCmd(g *globalFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "push ARCHIVE DEST",
		Short: "Vet, then push ARCHIVE so that DEST holds exactly its final image",
		Long: `Vet, then push the archive: upload the blobs it carries that DEST lacks, then
the manifests, then the tag, so that DEST holds exactly the final image, digest
for digest. Nothing is uploaded when a blob is missing (exit status 3). Prints
the pushed reference by digest. ARCHIVE may be - for standard input.`,
		Example: `  imo push difference.tar site-registry:5000/app:v2
  imo pull app:v1 app:v2 -o - | ssh site imo push - site-registry:5000/app:v2`,
		Args: exactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			if args[0] == "-" && g.passwordStdin {
				return usagef("--password-stdin cannot be used when the archive comes from standard input")
			}
			inc, err := newIncremental(cmd, g, pushSide)
			if err != nil {
				return err
			}
			var pushed name.Digest
			if args[0] == "-" {
				pushed, err = inc.PushStream(cmd.Context(), cmd.InOrStdin(), args[1])
			} else {
				pushed, err = inc.PushArchive(cmd.Context(), args[0], args[1])
			}
			if err != nil {
				return err
			}
			_, err = fmt.Fprintln(cmd.OutOrStdout(), pushed)
			return err
		},
	}
}
