package main

import (
	"fmt"
	"os"

	"github.com/imokit/imo"
	"github.com/imokit/imo/internal/outfile"
	"github.com/imokit/imo/inventory"
	"github.com/spf13/cobra"
)

func newPullCmd() *cobra.Command {
	var output, from, sublayer, signKey string
	var have []string
	var dryRun, withReferrers, passphraseStdin bool
	cmd := &cobra.Command{
		Use:   "pull BASE FINAL | pull --from FILE",
		Short: "Write the archive of everything FINAL needs that BASE lacks",
		Long: `Write the archive of everything FINAL needs that BASE lacks: every manifest and
config of FINAL, and each layer no platform of BASE has. BASE may be "scratch"
for the whole image. A regular output file appears complete or not at all (a
temporary file beside it is renamed over it); a symbolic link's target is
replaced that way and the link kept; a FIFO or character device is written
straight to, in order; a directory is refused.

With --from FILE, write one archive (a bundle) of many images: FILE lists
"BASE FINAL" pairs, one per line, with # comments, or a JSON array of
{"base": ..., "final": ...} objects; - reads standard input. Every blob is
stored once, and left out only when the base of every image using it has it.

With --have FILE (repeatable), also leave out every blob the inventory FILE
lists: what the far side's registry holds, from "imo inventory" there.

With --sublayer auto, a changed layer that is mostly a rebuild of a base
layer (same files, new times, a few changed binaries) travels as a delta: its
tar's headers, references to contents base has, binary patches and new
contents, and the recipe that recompresses the rebuilt tar into the exact
blob. Each delta is proved by rebuilding the blob and comparing digests, and
used only when at most half the blob; push rebuilds it from the base layers
at the destination, digest for digest.`,
		Example: `  imo pull registry.example/app:v1 registry.example/app:v2 -o difference.tar
  imo pull scratch registry.example/app:v2 -o app-v2.tar --platform linux/amd64
  imo pull --dry-run registry.example/app:v1 registry.example/app:v2
  imo pull --from release.txt -o bundle.tar
  imo pull --have site.json scratch registry.example/app:v2 -o app-v2.tar
  imo pull app:v1 app:v2 -o - | ssh site imo push - site-registry:5000/app:v2`,
		Args: func(cmd *cobra.Command, args []string) error {
			if cmd.Flags().Changed("from") && len(args) > 0 {
				return usagef("--from lists the pairs to pull: give no BASE FINAL arguments with it (got %d)", len(args))
			}
			if cmd.Flags().Changed("from") {
				return nil
			}
			return exactArgs(2)(cmd, args)
		},
	}
	f := newFlags(cmd).platform().credentials("base", "final").network().mirror().transfer().temp("sub-layer work")
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		if output != "-" && !dryRun {
			if err := outfile.Check(output); err != nil {
				return usageError{fmt.Errorf("-o: %w", err)}
			}
		}
		if output == "-" && !dryRun && isTerminal(cmd.OutOrStdout()) {
			return usagef("refusing to write an archive to a terminal: redirect standard output or use -o FILE")
		}
		images, err := pullImages(cmd, from, args)
		if err != nil {
			return err
		}
		extra, err := pullOptions(sublayer, withReferrers, have)
		if err != nil {
			return err
		}
		if passphraseStdin && (f.passwordStdin || from == "-") {
			return usagef("--passphrase-stdin cannot share standard input with --password-stdin or --from -")
		}
		if signKey != "" {
			k, err := signer(signKey, passphraseStdin, cmd.InOrStdin())
			if err != nil {
				return err
			}
			extra = append(extra, imo.WithSigner(k))
		}
		inc, err := f.incremental(extra...)
		if err != nil {
			return err
		}
		diff, err := inc.Resolve(cmd.Context(), images)
		if err != nil {
			return err
		}
		defer diff.Close()
		switch {
		case dryRun:
			return printPlan(cmd.OutOrStdout(), diff.Plan(), -1)
		case output == "-":
			return diff.WriteTo(cmd.Context(), cmd.OutOrStdout())
		}
		if err := diff.WriteFile(cmd.Context(), output); err != nil {
			return err
		}
		_, err = fmt.Fprintln(cmd.OutOrStdout(), output)
		return err
	}
	cmd.Flags().StringVarP(&output, "output", "o", "difference.tar", "archive file to write, or - for standard output")
	cmd.Flags().StringVar(&from, "from", "", "pull every BASE FINAL pair FILE lists into one archive (- for standard input)")
	cmd.Flags().StringArrayVar(&have, "have", nil, "leave out every blob this inventory (from imo inventory at the far side) lists; repeatable")
	cmd.Flags().StringVar(&sublayer, "sublayer", "off", "auto: carry changed layers as sub-layer deltas against the base's layers where that halves them or better (downloads the base's layers); off: whole layers")
	cmd.Flags().BoolVar(&withReferrers, "with-referrers", false, "also carry the final images' cosign signatures, attestations and SBOMs and their OCI referrers")
	cmd.Flags().StringVar(&signKey, "sign-key", "", "sign the archive's plan with this PEM private key (ECDSA P-256 or Ed25519); an encrypted key's passphrase comes from "+signPassphraseEnv+" or --passphrase-stdin")
	cmd.Flags().BoolVar(&passphraseStdin, "passphrase-stdin", false, "read the passphrase of an encrypted --sign-key from standard input")
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, "print which blobs would be carried and omitted, and the saving, without downloading any (with --sublayer auto, but for the layers deciding on deltas needs)")
	return cmd
}

// pullOptions are the options of --sublayer, --with-referrers and --have.
func pullOptions(sublayer string, withReferrers bool, have []string) ([]imo.Option, error) {
	var opts []imo.Option
	switch sublayer {
	case "auto":
		opts = append(opts, imo.WithSublayerDeltas())
	case "off":
	default:
		return nil, usagef("--sublayer %q: want auto or off", sublayer)
	}
	if withReferrers {
		opts = append(opts, imo.WithReferrers())
	}
	for _, path := range have {
		inv, err := inventory.Load(path)
		if err != nil {
			return nil, err
		}
		opts = append(opts, imo.WithHave(inv))
	}
	return opts, nil
}

// pullImages returns what to pull: the bundle the file from lists, or the
// pair the arguments name.
func pullImages(cmd *cobra.Command, from string, args []string) (imo.Images, error) {
	if !cmd.Flags().Changed("from") {
		return imo.Pair{Base: args[0], Final: args[1]}, nil
	}
	if from == "-" {
		return parsePairs(cmd.InOrStdin())
	}
	file, err := os.Open(from)
	if err != nil {
		return nil, err
	}
	defer file.Close()
	pairs, err := parsePairs(file)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", from, err)
	}
	return pairs, nil
}
