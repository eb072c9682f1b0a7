package main

import (
	"context"
	"fmt"
	"io"

	"github.com/imokit/imo/internal/outfile"
	"github.com/imokit/imo/inventory"
	"github.com/spf13/cobra"
)

func newInventoryCmd() *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   "inventory TARGET [REPO ...]",
		Short: "Write what repositories of a registry hold, for pull to leave out",
		Long: `Write, as JSON, the digest, size and kind of every manifest, config and layer
that repositories of the destination registry hold, and which repositories
hold each. TARGET is host[:port] or host[:port]/prefix; REPOs are repository
paths under TARGET. Without REPOs, every repository the registry's catalog
lists under TARGET is inventoried. TARGET may also be an OCI layout directory,
oci:DIR: every image its index.json lists. The file is sorted, one blob per line, so
that two inventories diff well, and appears complete or not at all. A summary
goes to standard error (not with --quiet). Uses the destination's flags (--dest-creds, ...).`,
		Example: `  imo inventory site-registry:5000 -o have.json
  imo inventory site-registry:5000/mirror team/app team/tool -o have.json
  imo inventory site-registry:5000 library/debian -o - | gzip > have.json.gz
  imo inventory oci:/srv/images -o have.json`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) < 1 {
				return usagef("%s takes a TARGET and optional repositories, got no argument", cmd.Name())
			}
			return nil
		},
	}
	f := newFlags(cmd).credentials("dest").network().transfer()
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		if output != "-" {
			if err := outfile.Check(output); err != nil {
				return usageError{fmt.Errorf("-o: %w", err)}
			}
		}
		inc, err := f.incremental()
		if err != nil {
			return err
		}
		inv, err := inc.Inventory(cmd.Context(), args[0], args[1:]...)
		if err != nil {
			return err
		}
		if output == "-" {
			err = inv.Write(cmd.OutOrStdout())
		} else {
			err = writeInventoryFile(cmd.Context(), inv, output)
		}
		if err != nil || f.quiet {
			return err
		}
		return printInventorySummary(cmd.ErrOrStderr(), inv, output)
	}
	cmd.Flags().StringVarP(&output, "output", "o", "-", "inventory file to write, or - for standard output")
	return cmd
}

// writeInventoryFile writes inv to path as the outfile package does:
// a regular file complete or not at all, a FIFO or device straight.
func writeInventoryFile(ctx context.Context, inv *inventory.Inventory, path string) error {
	out, err := outfile.Open(ctx, path)
	if err != nil {
		return err
	}
	defer out.Abort()
	if err := inv.Write(out); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return out.Commit()
}

// printInventorySummary writes one line about inv to w.
func printInventorySummary(w io.Writer, inv *inventory.Inventory, output string) error {
	var manifests, blobs int
	var size int64
	for _, b := range inv.Blobs {
		if b.Kind == inventory.KindManifest {
			manifests++
		} else {
			blobs++
		}
		size += b.Size
	}
	where := ""
	if output != "-" {
		where = " into " + output
	}
	_, err := fmt.Fprintf(w, "imo: inventory of %s: %d repositories, %d manifests, %d blobs, %d bytes, in %s%s\n",
		inv.Name(), len(inv.Repositories), manifests, blobs, size, inv.Took, where)
	return err
}
