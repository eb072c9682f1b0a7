package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/imokit/imo/internal/sandbox"
	"github.com/spf13/cobra"
)

func newDemoCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "demo",
		Short: "Run pull, inspect, vet and push between two registries on 127.0.0.1",
		Long: `Start two in-process registries on 127.0.0.1, put a sample app:v1 and app:v2
(two platforms, sharing their lower layers) into the first and app:v1 into the
second, as a disconnected site would hold it; then run pull, inspect, vet and
push exactly as a user would, and check that the pushed digest equals the
source's. Needs no network and no setup.`,
		Args: exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runDemo(cmd.Context(), cmd.OutOrStdout(), cmd.ErrOrStderr())
		},
	}
}

func runDemo(ctx context.Context, stdout, stderr io.Writer) error {
	sites, err := sandbox.NewSites(ctx, sandbox.SitesOptions{Format: sandbox.OCI, Platforms: []string{"linux/amd64", "linux/arm64/v8"}})
	if err != nil {
		return err
	}
	defer sites.Close()
	src, site, pair := sites.Source, sites.Site, sites.Pair
	dir, err := os.MkdirTemp("", "imo-demo-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	archive := filepath.Join(dir, "difference.tar")
	fmt.Fprintf(stdout, "source registry %s holds app:v1 and app:v2; site registry %s holds app:v1\n", src.Host, site.Host)

	var pushed bytes.Buffer
	for _, step := range []struct {
		args []string
		out  io.Writer
	}{
		{[]string{"pull", "--plain-http", "--progress", "plain", src.Ref("app:v1"), src.Ref("app:v2"), "-o", archive}, io.Discard},
		{[]string{"inspect", archive}, stdout},
		{[]string{"vet", "--plain-http", archive, site.Ref("app:v2")}, stdout},
		{[]string{"push", "--plain-http", "--progress", "plain", archive, site.Ref("app:v2")}, io.MultiWriter(stdout, &pushed)},
	} {
		fmt.Fprintf(stdout, "\n$ imo %s\n", strings.Join(step.args, " "))
		if code := run(ctx, step.args, nil, step.out, stdout); code != exitOK {
			return fmt.Errorf("demo: imo %s exited %d", step.args[0], code)
		}
	}
	want, err := pair.V2.Digest()
	if err != nil {
		return err
	}
	got := strings.TrimSpace(pushed.String())
	if !strings.HasSuffix(got, "@"+want.String()) {
		return fmt.Errorf("demo: pushed %s, want the source digest %s", got, want)
	}
	fmt.Fprintf(stdout, "\nthe site now holds app:v2 at the source digest %s\n", want)
	return nil
}
