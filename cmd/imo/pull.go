package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"strings"

	"github.com/imokit/imo"
	"github.com/imokit/imo/internal/outfile"
	"github.com/imokit/imo/inventory"
	"github.com/imokit/imo/volume"
	"github.com/spf13/cobra"
)

func newPullCmd() *cobra.Command {
	var output, from, sublayer, signKey, volumeSize string
	var have []string
	var dryRun, withReferrers, passphraseStdin, noResume bool
	var parity int
	cmd := &cobra.Command{
		Use:   "pull BASE FINAL | pull --from FILE",
		Short: "Write the archive of everything FINAL needs that BASE lacks",
		Long: `Write the archive of everything FINAL needs that BASE lacks: every manifest and
config of FINAL, and each layer no platform of BASE has. BASE may be "scratch"
for the whole image. Each of BASE and FINAL is an image in a registry
(HOST/REPO:TAG, or docker://HOST/REPO:TAG), or in an OCI layout directory
(oci:DIR[:TAG], oci:DIR@sha256:...) or tar (oci-archive:FILE[:TAG]), or a
docker save tar (docker-archive:FILE[:REPO:TAG]; its manifest is built from its
config and layers, see the README): each is read in place, every blob checked
against its digest.
A regular output file appears complete or not at all: it
is written as FILE.partial beside it and renamed over it once complete; a
symbolic link's target is replaced that way and the link kept; a FIFO or
character device is written straight to, in order; a directory is refused.

An interrupted pull (Ctrl-C, a connection lost past the retries, kill -9, a
power cut) keeps FILE.partial. The same command again resumes it: it hashes
what the partial file holds and fetches only the rest, with Range requests
inside a blob. If the images changed in between (a tag moved), the partial file
is written over, with a message; --no-resume always starts afresh. A pull that
wrote no blob byte leaves nothing behind. -o - (standard output) cannot resume.

With --from FILE, write one archive (a bundle) of many images: FILE lists
"BASE FINAL" pairs, one per line, with # comments, or a JSON array of
{"base": ..., "final": ...} objects; - reads standard input. Every blob is
stored once, and left out only when the base of every image using it has it.

With --have FILE (repeatable), also leave out every blob the inventory FILE
lists: what the far side's registry holds, from "imo inventory" there. FILE
may also be an earlier imo archive (or a volume of a set, or their directory):
the far side holds what it carried and what it left out as already there, once
it is pushed. On a one-way link, keep each archive (its plan is all that is
read) and pass them all: each pull then carries only what was never sent.

With --sublayer auto, a changed layer that is mostly a rebuild of a base
layer (same files, new times, a few changed binaries) travels as a delta: its
tar's headers, references to contents base has, binary patches and new
contents, and the recipe that recompresses the rebuilt tar into the exact
blob. Each delta is proved by rebuilding the blob and comparing digests, and
used only when at most half the blob; push rebuilds it from the base layers
at the destination, digest for digest.

With --volume-size SIZE, write the archive as a set of volume files beside -o,
none larger than SIZE, for media and links with a size limit: for -o
difference.tar, difference.vol1-of-N.tar and so on. Each volume stands alone: it
names its set, which volume of how many it is and what it holds, carries the
plan and a SHA-256 of each piece (1 MiB at most), so one volume can be checked with
nothing else. With --parity N, also write N parity volumes (Reed-Solomon):
any N volumes of the set may then be lost or damaged. SIZE is bytes, a
decimal size (4.7G = 4,700,000,000 bytes, 700MB), a binary size (4GiB), or a
medium:
` + mediaHelp() + `
The volumes appear under their names only when the whole set is written, and
resume as a single file does (FILE.partial holds the journal).
vet, push, inspect and verify take the volumes (any order) or their directory.`,
		Example: `  imo pull registry.example/app:v1 registry.example/app:v2 -o difference.tar
  imo pull scratch registry.example/app:v2 -o app-v2.tar --platform linux/amd64
  imo pull --dry-run registry.example/app:v1 registry.example/app:v2
  imo pull --from release.txt -o bundle.tar
  imo pull --volume-size dvd --parity 1 app:v1 app:v2 -o /media/burn/difference.tar
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
		size, err := volumeOptions(volumeSize, parity, output)
		if err != nil {
			return err
		}
		if output != "-" && !dryRun && size == 0 {
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
		extra, err := pullOptions(cmd.Context(), sublayer, withReferrers, have)
		if err != nil {
			return err
		}
		if passphraseStdin && (f.passwordStdin || from == "-") {
			return usagef("--passphrase-stdin cannot share standard input with --password-stdin or --from -")
		}
		if noResume {
			extra = append(extra, imo.WithNoResume())
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
		written := []string{output}
		if size > 0 {
			written, err = diff.WriteVolumes(cmd.Context(), output, size, parity)
		} else {
			err = diff.WriteFile(cmd.Context(), output)
		}
		if err != nil {
			return err
		}
		_, err = fmt.Fprintln(cmd.OutOrStdout(), strings.Join(written, "\n"))
		return err
	}
	cmd.Flags().StringVarP(&output, "output", "o", "difference.tar", "archive file to write, or - for standard output")
	cmd.Flags().StringVar(&from, "from", "", "pull every BASE FINAL pair FILE lists into one archive (- for standard input)")
	cmd.Flags().StringArrayVar(&have, "have", nil, "leave out every blob this inventory (from imo inventory at the far side) lists, or this earlier archive sent; repeatable")
	cmd.Flags().StringVar(&sublayer, "sublayer", "off", "auto: carry changed layers as sub-layer deltas against the base's layers where that halves them or better (downloads the base's layers); off: whole layers")
	cmd.Flags().BoolVar(&withReferrers, "with-referrers", false, "also carry the final images' cosign signatures, attestations and SBOMs and their OCI referrers")
	cmd.Flags().StringVar(&signKey, "sign-key", "", "sign the archive's plan with this PEM private key (ECDSA P-256 or Ed25519); an encrypted key's passphrase comes from "+signPassphraseEnv+" or --passphrase-stdin")
	cmd.Flags().BoolVar(&passphraseStdin, "passphrase-stdin", false, "read the passphrase of an encrypted --sign-key from standard input")
	cmd.Flags().StringVar(&volumeSize, "volume-size", "", "write the archive as volumes of at most this size beside -o: bytes, 4.7G, 4GiB, or cd, dvd, dvd-dl, bd25, bd50, fat32")
	cmd.Flags().IntVar(&parity, "parity", 0, "with --volume-size, also write this many parity volumes: any as many volumes may be lost or damaged")
	cmd.Flags().BoolVar(&noResume, "no-resume", false, "start afresh, writing over the partial file an interrupted pull left")
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, "print which blobs would be carried and omitted, and the saving, without downloading any (with --sublayer auto, but for the layers deciding on deltas needs)")
	return cmd
}

// volumeOptions checks --volume-size and --parity, returning the volume
// size in bytes, or 0 for a single archive.
func volumeOptions(volumeSize string, parity int, output string) (int64, error) {
	switch {
	case parity < 0:
		return 0, usagef("--parity %d: want 0 or more parity volumes", parity)
	case volumeSize == "" && parity > 0:
		return 0, usagef("--parity adds parity volumes to a volume set: give --volume-size too")
	case volumeSize == "":
		return 0, nil
	case output == "-":
		return 0, usagef("--volume-size writes volume files beside -o: it cannot write to standard output")
	}
	size, err := volume.ParseSize(volumeSize)
	if err != nil {
		return 0, usagef("--volume-size: %v", err)
	}
	return size, nil
}

// mediaHelp lists the media --volume-size knows, with their sizes.
func mediaHelp() string {
	var b strings.Builder
	for _, m := range volume.Media {
		fmt.Fprintf(&b, "  %-7s %15s bytes  %s\n", m.Name, commas(m.Size), m.About)
	}
	return b.String()
}

// commas writes n with thousands separators.
func commas(n int64) string {
	s := fmt.Sprint(n)
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}

// pullOptions are the options of --sublayer, --with-referrers and --have.
func pullOptions(ctx context.Context, sublayer string, withReferrers bool, have []string) ([]imo.Option, error) {
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
		opt, err := haveOption(ctx, path)
		if err != nil {
			return nil, err
		}
		opts = append(opts, opt)
	}
	return opts, nil
}

// haveOption is the option of --have FILE: an inventory (a JSON file), or
// an earlier archive (an archive file, a volume of a set, or their
// directory), of which only the plan is read.
func haveOption(ctx context.Context, path string) (imo.Option, error) {
	if inventoryFile(path) {
		inv, err := inventory.Load(path)
		if err != nil {
			return nil, err
		}
		return imo.WithHave(inv), nil
	}
	a, _, err := volume.OpenArchive(ctx, false, path)
	if err != nil {
		return nil, fmt.Errorf("--have %s: neither an inventory nor an imo archive: %w", path, err)
	}
	defer a.Close()
	return imo.WithSent(a), nil
}

// inventoryFile reports whether path is an inventory rather than an
// archive: a regular file whose first byte, after white space, opens a JSON
// object, or a pipe (read once, by inventory.Load).
func inventoryFile(path string) bool {
	fi, err := os.Stat(path)
	if err != nil || !fi.Mode().IsRegular() && !fi.IsDir() {
		return true // for inventory.Load to read, or to say what is wrong
	}
	if fi.IsDir() {
		return false
	}
	f, err := os.Open(path)
	if err != nil {
		return true
	}
	defer f.Close()
	b := make([]byte, 512)
	n, _ := f.Read(b)
	t := bytes.TrimLeft(b[:n], " \t\r\n")
	return len(t) > 0 && t[0] == '{'
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
