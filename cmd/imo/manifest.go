package main

import (
	"fmt"

	"github.com/imokit/imo"
	"github.com/spf13/cobra"
)

func newManifestCmd(g *globalFlags) *cobra.Command {
	var list, image, head bool
	cmd := &cobra.Command{
		Use:   "manifest REF",
		Short: "Print a manifest exactly as the registry serves it",
		Long: `Print a manifest exactly as the registry serves it: by default what REF names;
with --list the image list (index) of a multi-platform image; with --image the
image manifest for the selected platform (--platform, or this machine's).
--head prints the digest, media type and size instead of the manifest.`,
		Example: `  imo manifest registry.example/app:v2 --list
  imo manifest registry.example/app:v2 --image --platform linux/arm64
  imo manifest registry.example/app:v2 --head`,
		Args: exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if list && image {
				return usagef("--list and --image conflict")
			}
			if image && len(g.platforms) > 1 {
				return usagef("--image shows one platform's manifest: give one --platform, not %d", len(g.platforms))
			}
			kind := imo.ManifestAsServed
			switch {
			case list:
				kind = imo.ManifestList
			case image:
				kind = imo.ManifestImage
			}
			inc, err := newIncremental(cmd, g, pullSide)
			if err != nil {
				return err
			}
			desc, raw, err := inc.Manifest(cmd.Context(), args[0], kind)
			if err != nil {
				return err
			}
			if head {
				_, err = fmt.Fprintf(cmd.OutOrStdout(), "%s\t%s\t%d\n", desc.Digest, desc.MediaType, desc.Size)
				return err
			}
			_, err = cmd.OutOrStdout().Write(raw)
			return err
		},
	}
	cmd.Flags().BoolVar(&list, "list", false, "the image list (index) manifest")
	cmd.Flags().BoolVar(&image, "image", false, "the image manifest for the selected platform")
	cmd.Flags().BoolVar(&head, "head", false, "print digest, media type and size only")
	return cmd
}
