// Command image builds imo's container image from source alone: a static
// imo for each platform, the CA certificates, nothing else, as an OCI
// image index in an oci-archive tar. It needs no base image and no
// container engine: the Go toolchain builds the binaries, and the image
// is assembled the way ko does, layer by layer.
//
//	go run ./build/image -o imo-image.tar
//
// The same source gives the same bytes, run after run and machine after
// machine: binaries built with -trimpath and no build ID or VCS stamp,
// files and tar entries sorted, every time the commit's (or
// SOURCE_DATE_EPOCH's), the CA bundle that of a pinned Go module. It prints
// the index digest, then each platform's manifest digest and sizes.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"time"
)

// source is where imo's source lives, for the image's labels.
const source = "https://github.com/imokit/imo"

func main() {
	var o options
	flag.StringVar(&o.out, "o", "", "oci-archive file to write (required)")
	flag.StringVar(&o.version, "version", "", "the version stamped into imo and the labels (default: git describe, or devel)")
	flag.StringVar(&o.revision, "revision", "", "the commit in the labels (default: git rev-parse HEAD)")
	flag.StringVar(&o.platforms, "platforms", "linux/amd64,linux/arm64", "the platforms to build, comma-separated")
	flag.StringVar(&o.tag, "tag", "", "the tag index.json names the image by (default: the version)")
	flag.Parse()
	if o.out == "" || flag.NArg() > 0 {
		fmt.Fprintln(os.Stderr, "usage: go run ./build/image -o FILE [-version V] [-revision R] [-platforms os/arch,...]")
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, o); err != nil {
		fmt.Fprintln(os.Stderr, "build/image:", err)
		os.Exit(1)
	}
}

// options are the builder's flags.
type options struct {
	out, version, revision, platforms, tag string
}

// stamp fills in what the flags leave out from git and the environment,
// and returns the time every file and the image are dated.
func (o *options) stamp(ctx context.Context) (time.Time, error) {
	if o.version == "" {
		o.version = gitOr(ctx, "devel", "describe", "--tags", "--always", "--dirty")
	}
	if o.revision == "" {
		o.revision = gitOr(ctx, "", "rev-parse", "HEAD")
	}
	if o.tag == "" {
		o.tag = strings.NewReplacer("+", "_", "/", "_").Replace(o.version)
	}
	epoch := os.Getenv("SOURCE_DATE_EPOCH")
	if epoch == "" {
		epoch = gitOr(ctx, "0", "log", "-1", "--format=%ct")
	}
	secs, err := strconv.ParseInt(epoch, 10, 64)
	if err != nil {
		return time.Time{}, fmt.Errorf("SOURCE_DATE_EPOCH %q: %w", epoch, err)
	}
	return time.Unix(secs, 0).UTC(), nil
}

// gitOr runs git with args and returns its output, or fallback when git
// or the repository is not there.
func gitOr(ctx context.Context, fallback string, args ...string) string {
	out, err := exec.CommandContext(ctx, "git", args...).Output()
	if s := strings.TrimSpace(string(out)); err == nil && s != "" {
		return s
	}
	return fallback
}

func run(ctx context.Context, o options) error {
	created, err := o.stamp(ctx)
	if err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "imo-image-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	certs, err := caBundle()
	if err != nil {
		return err
	}
	var images []platformImage
	for _, p := range strings.Split(o.platforms, ",") {
		bin, err := buildBinary(ctx, dir, p, o.version)
		if err != nil {
			return err
		}
		img, err := newPlatformImage(p, bin, certs, created, o)
		if err != nil {
			return err
		}
		images = append(images, img)
	}
	idx, err := writeArchive(ctx, o.out, o.tag, images)
	if err != nil {
		return err
	}
	fmt.Printf("%s\t%s\tindex\n", idx, o.out)
	for _, img := range images {
		fmt.Printf("%s\t%s\tbinary %d bytes, layer %d bytes compressed\n", img.manifest.Digest, img.platform, img.binarySize, img.layer.Size)
	}
	return nil
}

// buildBinary builds a static, reproducible imo for platform into dir.
func buildBinary(ctx context.Context, dir, platform, version string) (string, error) {
	goos, goarch, ok := strings.Cut(platform, "/")
	if !ok {
		return "", fmt.Errorf("platform %q: want os/arch", platform)
	}
	out := dir + "/imo-" + goos + "-" + goarch
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-buildvcs=false",
		"-ldflags", "-s -w -buildid= -X main.buildVersion="+version, "-o", out, "./cmd/imo")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS="+goos, "GOARCH="+goarch, "GOFLAGS=-mod=readonly")
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("building imo for %s: %w", platform, err)
	}
	return out, nil
}
