package main

import (
	"fmt"
	"runtime/debug"

	"github.com/spf13/cobra"
)

// newRootCmd builds the imo command and its subcommands.
func newRootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:   "imo",
		Short: "Move container images into places the internet does not reach, carrying only what changed",
		Long: `imo pulls the difference between two images (a base the far side already has,
and a final one it needs) into a tar archive, checks at the far side that the
registry holds everything the archive leaves out, and pushes it, so that the
registry ends up with exactly the final image, digest for digest.

  imo pull registry.example/app:v1 registry.example/app:v2 -o difference.tar
  imo vet  difference.tar site-registry:5000/app:v2
  imo push difference.tar site-registry:5000/app:v2

Exit status: 0 success, 1 failure, 2 usage error, 3 blobs missing at the
destination (or volumes of a set, beyond its parity), 4 the archive refused by
--verify-key, 130 and 143 stopped by SIGINT and SIGTERM.`,
		Version: version(),
		Args: func(_ *cobra.Command, args []string) error {
			if len(args) > 0 {
				return usagef("unknown command %q", args[0])
			}
			return nil
		},
		RunE:          func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error {
		if c == root {
			return usagef("%v (each command takes its own flags, after its name: imo pull --plain-http ...)", err)
		}
		return usageError{err}
	})
	root.AddCommand(
		newPullCmd(),
		newVetCmd(),
		newPushCmd(),
		newInventoryCmd(),
		newInspectCmd(),
		newVerifyCmd(),
		newManifestCmd(),
		newDemoCmd(),
		newVersionCmd(),
	)
	return root
}

// buildVersion is the version a release build stamps in with
// -ldflags "-X main.buildVersion=...", as the image builder does.
var buildVersion string

// version is the version imo was built from: the stamped one, a tag for
// "go install ...@vX.Y.Z", "devel" for a build from a checkout.
func version() string {
	if buildVersion != "" {
		return buildVersion
	}
	if info, ok := debug.ReadBuildInfo(); ok && info.Main.Version != "" && info.Main.Version != "(devel)" {
		return info.Main.Version
	}
	return "devel"
}

func newVersionCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print imo's version",
		Args:  exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			_, err := fmt.Fprintf(cmd.OutOrStdout(), "imo version %s\n", version())
			return err
		},
	}
}
