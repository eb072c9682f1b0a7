package main

import (
	"fmt"
	"io"
	"os"

	"github.com/imokit/imo"
	"github.com/spf13/cobra"
	"golang.org/x/term"
)

func newPullCmd(g *globalFlags) *cobra.Command {
	var output string
	var dryRun bool
	cmd := &cobra.Command{
		Use:   "pull BASE FINAL",
		Short: "Write the archive of everything FINAL needs that BASE lacks",
		Long: `Write the archive of everything FINAL needs that BASE lacks: every manifest and
config of FINAL, and each layer no platform of BASE has. BASE may be "scratch"
for the whole image. The output file appears complete or not at all.`,
		Example: `  imo pull registry.example/app:v1 registry.example/app:v2 -o difference.tar
  imo pull scratch registry.example/app:v2 -o app-v2.tar --platform linux/amd64
  imo pull --dry-run registry.example/app:v1 registry.example/app:v2
  imo pull app:v1 app:v2 -o - | ssh site imo push - site-registry:5000/app:v2`,
		Args: exactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			inc, err := newIncremental(cmd, g, pullSide)
			if err != nil {
				return err
			}
			if dryRun {
				plan, err := inc.Plan(cmd.Context(), args[0], args[1])
				if err != nil {
					return err
				}
				return printPlan(cmd.OutOrStdout(), plan, -1)
			}
			if output == "-" {
				if f, ok := cmd.OutOrStdout().(*os.File); ok && term.IsTerminal(int(f.Fd())) {
					return usagef("refusing to write an archive to a terminal: redirect standard output or use -o FILE")
				}
				return pullTo(cmd, inc, args, cmd.OutOrStdout())
			}
			return pullToFile(cmd, inc, args, output)
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "difference.tar", "archive file to write, or - for standard output")
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, "print which blobs would be carried and omitted, and the saving, without downloading any")
	return cmd
}

func pullTo(cmd *cobra.Command, inc *imo.Incremental, args []string, w io.Writer) error {
	diff, err := inc.Pull(cmd.Context(), args[0], args[1])
	if err != nil {
		return err
	}
	if _, err := io.Copy(w, diff); err != nil {
		diff.Close()
		return err
	}
	return diff.Close()
}

// pullToFile writes the archive to path, complete or not at all.
func pullToFile(cmd *cobra.Command, inc *imo.Incremental, args []string, path string) error {
	if _, err := inc.PullToFile(cmd.Context(), args[0], args[1], path); err != nil {
		return err
	}
	_, err := fmt.Fprintln(cmd.OutOrStdout(), path)
	return err
}
