// Command bench measures imo against the raw transfer floor and peer tools,
// side by side, on the CNCF distribution registry on 127.0.0.1.
//
//	go run ./bench                    # the default profile: ~300 MiB of real files
//	go run ./bench -profile quick     # ~30 MiB
//	go run ./bench -profile large     # ~2 GiB
//
// It needs docker-registry (and skopeo, as a reference peer) from Debian.
// Images are built from real files on this machine (/usr/lib, /usr/bin,
// /usr/share, the Go toolchain), gzip-compressed as Docker does (level 6),
// with a v2 that shares its lower layers with v1. Every tool runs as a
// subprocess, in alternation, several times; the table reports medians,
// peak RSS and bytes written to disk (getrusage), and ratios.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
)

func main() {
	ctx := context.Background()
	var o options
	flag.StringVar(&o.profile, "profile", "default", "image size: quick (~30 MiB), default (~300 MiB) or large (~2 GiB)")
	flag.IntVar(&o.runs, "runs", 3, "runs of each tool per scenario")
	flag.StringVar(&o.dir, "dir", "", "work directory on a real disk (default: a new one under the system's temporary directory, removed at the end)")
	flag.StringVar(&o.out, "o", "", "also write the markdown report to this file")
	flag.BoolVar(&o.skipConcurrency, "skip-concurrency", false, "skip the slowed-registry scenarios (six layers, and one big layer in ranges)")
	flag.BoolVar(&o.onlySublayer, "only-sublayer", false, "run the sub-layer delta scenario only")
	flag.BoolVar(&o.skipSublayer, "skip-sublayer", false, "skip the sub-layer delta scenario")
	flag.BoolVar(&o.skipBundle, "skip-bundle", false, "skip the twenty-image bundle scenario")
	flag.BoolVar(&o.onlyPulls, "only-pulls", false, "run the three pull scenarios only (delta, whole, index)")
	role := flag.String("role", "", "internal: run as a measured helper (floor, floor-verify, ggcr-pull, ggcr-push)")
	flag.Parse()

	var err error
	switch *role {
	case "":
		err = run(ctx, o)
	case "floor":
		err = floor(ctx, flag.Args(), false)
	case "floor-verify":
		err = floor(ctx, flag.Args(), true)
	case "ggcr-pull":
		err = ggcrPull(ctx, flag.Args())
	case "ggcr-push":
		err = ggcrPush(ctx, flag.Args())
	default:
		err = fmt.Errorf("unknown role %q", *role)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}
