package main

import (
	"fmt"
	"runtime"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/spf13/cobra"
)

func newManifestCmd() *cobra.Command {
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
	}
	f := newFlags(cmd).platform().credentials("final").network().mirror()
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		if list && image {
			return usagef("--list and --image conflict")
		}
		platforms, _, err := f.platformList()
		if err != nil {
			return err
		}
		if image && len(platforms) > 1 {
			return usagef("--image shows one platform's manifest: give one --platform, not %d", len(platforms))
		}
		var platform *v1.Platform
		if image {
			platform = &v1.Platform{OS: runtime.GOOS, Architecture: runtime.GOARCH}
			if len(platforms) == 1 {
				platform = &platforms[0]
			}
		}
		inc, err := f.incremental()
		if err != nil {
			return err
		}
		desc, raw, err := inc.Manifest(cmd.Context(), args[0], platform)
		if err != nil {
			return err
		}
		if list && !desc.MediaType.IsIndex() {
			return fmt.Errorf("%s is a single-platform image (%s): it has no image list manifest", args[0], desc.MediaType)
		}
		if head {
			_, err = fmt.Fprintf(cmd.OutOrStdout(), "%s\t%s\t%d\n", desc.Digest, desc.MediaType, desc.Size)
			return err
		}
		_, err = cmd.OutOrStdout().Write(raw)
		return err
	}
	cmd.Flags().BoolVar(&list, "list", false, "the image list (index) manifest")
	cmd.Flags().BoolVar(&image, "image", false, "the image manifest for the selected platform")
	cmd.Flags().BoolVar(&head, "head", false, "print digest, media type and size only")
	return cmd
}
