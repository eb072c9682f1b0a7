package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"text/tabwriter"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/imokit/imo/archive"
	"github.com/imokit/imo/volume"
	"github.com/spf13/cobra"
)

func newInspectCmd() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "inspect ARCHIVE...",
		Short: "Describe an archive without a registry",
		Long: `Describe an archive without contacting a registry: the final image and the base
it was diffed against, its platforms, every blob with its size and whether the
archive carries it, the saving against the whole image, and who signed it. Works
on any OCI image layout in a tar, such as skopeo's oci-archive, and on the
volumes of a set (files in any order, or their directory). With
--verify-key (or ` + verifyKeyEnv + `), check the signature and every byte against the
signed plan first: exit status 4 when the archive fails.`,
		Example: `  imo inspect difference.tar
  imo inspect --verify-key release.pub difference.tar
  imo inspect --json difference.tar | jq '.blobs[] | select(.included | not)'`,
		Args: minArgs(1),
	}
	f := newFlags(cmd).verify()
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		keys, err := f.publicKeys()
		if err != nil {
			return err
		}
		a, err := archiveSource{paths: args, checks: len(keys) > 0}.open(cmd)
		if err != nil {
			return err
		}
		defer a.Close()
		verified := ""
		if len(keys) > 0 {
			signer, err := a.Verify(cmd.Context(), keys)
			if err != nil {
				return err
			}
			verified = archive.Fingerprint(signer)
		}
		plan, err := a.Check(cmd.Context())
		if err != nil {
			return err
		}
		if asJSON {
			enc := json.NewEncoder(cmd.OutOrStdout())
			enc.SetIndent("", "  ")
			return enc.Encode(plan)
		}
		size := int64(-1)
		if fi, err := os.Stat(args[0]); err == nil && len(args) == 1 && fi.Mode().IsRegular() && !volume.IsVolume(args[0]) {
			size = fi.Size()
		}
		if err := printPlan(cmd.OutOrStdout(), plan, size); err != nil {
			return err
		}
		return printSigner(cmd.OutOrStdout(), plan.Signer, verified)
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the plan as JSON")
	return cmd
}

// printSigner says who signed the archive, and whether a key checked it.
func printSigner(w io.Writer, signer, verified string) error {
	var err error
	switch {
	case verified != "":
		_, err = fmt.Fprintf(w, "signed by the key %s: verified, every entry as the signed plan names it\n", verified)
	case signer != "":
		_, err = fmt.Fprintf(w, "signed by the key %s (not checked: give --verify-key)\n", signer)
	default:
		_, err = fmt.Fprintln(w, "not signed")
	}
	return err
}

// printPlan writes a plan for people; archiveSize is the archive file's
// size, or -1 before there is one.
func printPlan(w io.Writer, p *archive.Plan, archiveSize int64) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	for _, img := range p.Images {
		if img.Subject != (v1.Hash{}) {
			fmt.Fprintf(tw, "artifact\t%s\t%s\n", img.Final.Reference, img.Final.Digest)
			fmt.Fprintf(tw, "refers to\t%s\t\n", img.Subject)
		} else {
			fmt.Fprintf(tw, "final\t%s\t%s\n", img.Final.Reference, img.Final.Digest)
			base := img.Base.Reference
			if base == "" {
				base = "(unknown)"
			}
			fmt.Fprintf(tw, "base\t%s\t%s\n", base, hashOrNothing(img.Base.Digest))
		}
		for _, m := range img.Manifests {
			platform := ""
			if m.Platform != nil {
				platform = m.Platform.String()
			}
			fmt.Fprintf(tw, "manifest\t%s\t%s\t%d\t%s\n", m.Digest, m.MediaType, m.Size, platform)
		}
	}
	for _, inv := range p.Inventories {
		fmt.Fprintf(tw, "inventory\t%s\ttaken %s (%s ago), %d blobs\n", inv.Name(), inv.Taken.Format(time.RFC3339), time.Since(inv.Taken).Round(time.Second), inv.Blobs)
	}
	for _, s := range p.Sent {
		fmt.Fprintf(tw, "sent before\t%s\tplan %s, %d blobs\n", s.Archive, s.Plan, s.Blobs)
	}
	fmt.Fprintln(tw)
	fmt.Fprintln(tw, "BLOB\tSIZE\tMEDIA TYPE\tCARRIED")
	for _, b := range p.Blobs {
		carried := "yes"
		if b.Reason != "" {
			carried = "yes: " + string(b.Reason)
		}
		switch {
		case b.Delta != nil:
			carried = fmt.Sprintf("delta: %d bytes (%.1f%%), %s", b.Delta.Size, percent(b.Delta.Size, b.Size), b.Delta.Recipe)
		case !b.Included:
			carried = "no: " + string(b.Reason)
		}
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\n", b.Digest, b.Size, b.MediaType, carried)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	carried, whole := p.Bytes()
	if len(p.Images) > 1 {
		fmt.Fprintln(w)
		tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "IMAGE\tCARRIED\tWHOLE\tSAVES")
		var sum int64
		for n, img := range p.Images {
			c, wh := p.ImageBytes(n)
			sum += wh
			fmt.Fprintf(tw, "%s\t%d\t%d\t%.1f%%\n", img.Final.Reference, c, wh, percent(wh-c, wh))
		}
		if err := tw.Flush(); err != nil {
			return err
		}
		fmt.Fprintf(w, "\nthe %d images take %d bytes one by one, %d with each blob once (deduplication saves %.1f%%)\n", len(p.Images), sum, whole, percent(sum-whole, sum))
	}
	what := "the whole image"
	if len(p.Images) > 1 {
		what = "the whole images"
	}
	fmt.Fprintf(w, "\ncarries %d of %d bytes (saves %.1f%% against %s)\n", carried, whole, percent(whole-carried, whole), what)
	if archiveSize >= 0 {
		fmt.Fprintf(w, "archive file: %d bytes\n", archiveSize)
	}
	return nil
}

// hashOrNothing prints h, or nothing for the zero hash (scratch's).
func hashOrNothing(h v1.Hash) string {
	if h == (v1.Hash{}) {
		return ""
	}
	return h.String()
}

// percent is part as a percentage of whole.
func percent(part, whole int64) float64 {
	if whole == 0 {
		return 0
	}
	return 100 * float64(part) / float64(whole)
}
