package main

import (
	"fmt"
	"io"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/imokit/imo"
	"github.com/imokit/imo/archive"
	"github.com/imokit/imo/internal/outfile"
	"github.com/spf13/cobra"
)

func newPushCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "push ARCHIVE... DEST",
		Short: "Vet, then push ARCHIVE so that DEST holds exactly its images",
		Long: `Vet, then push the archive: upload the blobs it carries that DEST lacks, then
the manifests, then the tag, so that DEST holds exactly the final image, digest
for digest. Nothing is uploaded when a blob is missing (exit status 3). Prints
each pushed reference by digest. ARCHIVE may be - for standard input, or the
volumes of a set (files in any order, or their directory): every piece of every
volume is checked first, missing or damaged ones are rebuilt from parity as
they are read, and nothing is sent when parity cannot cover them (exit 3).

DEST is an image reference, REGISTRY/REPO[:TAG][@DIGEST], for an archive of one
image: it must name its registry (docker.io/... for Docker Hub). Without a tag
the image takes the tag it had at the source (or goes by digest alone when it
had none); with a tag and a digest, the tag is written and the digest must be
the image's. For a bundle (an archive written by pull --from, or of several
images), or when DEST is a registry host[:port] alone or ends in "/", DEST is a
target, host[:port] with an optional /prefix, and each image lands at DEST,
then the repository path and tag it has in the archive. Each image is pushed all or
nothing; imo goes on with the others and exits non-zero if any failed.

DEST may also be an OCI image layout directory, oci:DIR[:TAG], created when it
does not exist: blobs go in first, each checked, then index.json is replaced
atomically, keeping every image already there; the image's entry is named TAG,
or the tag it had at the source (a bundle's images, their references). A push
that fails leaves the layout as it was.`,
		Example: `  imo push difference.tar site-registry:5000/app:v2
  imo push bundle.tar site-registry:5000/mirror
  imo pull app:v1 app:v2 -o - | ssh site imo push - site-registry:5000/app:v2
  imo push /media/usb/ site-registry:5000/app:v2
  imo push difference.tar oci:/srv/images:v2`,
		Args: minArgs(2),
	}
	f := newFlags(cmd).credentials("dest").network().transfer().temp("an archive read from standard input, and sub-layer work").mounts().verify()
	var report string
	cmd.RunE = func(cmd *cobra.Command, args []string) (err error) {
		paths, dst := args[:len(args)-1], args[len(args)-1]
		if args[0] == "-" && f.passwordStdin {
			return usagef("--password-stdin cannot be used when the archive comes from standard input")
		}
		if args[0] == "-" && isTerminal(cmd.InOrStdin()) {
			return usagef("refusing to read an archive from a terminal: pipe one in, or name the archive file")
		}
		if report != "" {
			if err := outfile.Check(report); err != nil {
				return usageError{fmt.Errorf("--report: %w", err)}
			}
		}
		var a *archive.Reader
		var results []imo.ImageResult
		rep := newReporting(report, strings.Join(paths, " "), dst, f.checksSignatures())
		if report != "" {
			defer func() {
				if werr := rep.write(cmd.Context(), a, results, err); err == nil {
					err = werr
				}
			}()
		}
		if rep.collector.next, err = f.reporter(); err != nil {
			return err
		}
		inc, err := f.incremental(imo.WithReporter(rep.collector))
		if err != nil {
			return err
		}
		if a, err = (archiveSource{paths: paths, tempDir: f.tempDir, scan: true, checks: f.checksSignatures()}).open(cmd); err != nil {
			return err
		}
		defer a.Close()
		noteSigner(cmd.ErrOrStderr(), a, f.checksSignatures())
		results, err = inc.PushArchive(cmd.Context(), a, dst)
		noteTag(cmd.ErrOrStderr(), dst, results)
		if werr := printPushed(cmd.OutOrStdout(), results); err == nil {
			err = werr
		}
		return err
	}
	cmd.Flags().StringVar(&report, "report", "", "write a JSON record of the push to this file, whatever its outcome (see the README)")
	return cmd
}

// printPushed prints the reference by digest of every image pushed.
func printPushed(w io.Writer, results []imo.ImageResult) error {
	for _, r := range results {
		if r.Err == nil {
			if _, err := fmt.Fprintln(w, r); err != nil {
				return err
			}
		}
	}
	return nil
}

// noteTag says where an image went when the destination, an image
// reference, named no tag: to the tag it had at the source, or by digest.
func noteTag(w io.Writer, dst string, results []imo.ImageResult) {
	last := dst[strings.LastIndexByte(dst, '/')+1:]
	if len(results) != 1 || results[0].Destination == nil || strings.ContainsAny(last, ":@") || !strings.Contains(dst, "/") {
		return
	}
	if _, ok := results[0].Destination.(name.Tag); ok {
		fmt.Fprintf(w, "imo: %s names no tag: the image goes to %s, its tag at the source\n", dst, results[0].Destination)
		return
	}
	fmt.Fprintf(w, "imo: %s names no tag, and the image had none at the source: it goes by digest alone\n", dst)
}
