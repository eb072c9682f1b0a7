package imo_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"os"
	"path/filepath"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/imokit/imo"
	"github.com/imokit/imo/archive"
	"github.com/imokit/imo/internal/sandbox"
)

// exampleRegistries starts two in-process registries on 127.0.0.1: src
// holds app:v1 and app:v2 (v2 changes one layer of v1), dst holds app:v1,
// as a disconnected site would.
func exampleRegistries() (src, dst string, stop func()) {
	sites, err := sandbox.NewSites(context.Background(), sandbox.SitesOptions{Platforms: []string{"linux/amd64"}})
	if err != nil {
		log.Fatal(err)
	}
	return sites.Source.Host, sites.Site.Host, sites.Close
}

// Pull the difference between two versions of an image, check that the
// destination holds what the archive leaves out, and push it.
func Example() {
	src, dst, stop := exampleRegistries()
	defer stop()
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "imo-example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	arc := filepath.Join(dir, "difference.tar")

	// The registries here speak plain HTTP; imo uses HTTPS unless told.
	inc := imo.New(imo.WithPlainHTTP())

	// Pull: stream the difference between app:v1 and app:v2 into a file.
	diff, err := inc.Pull(ctx, src+"/app:v1", src+"/app:v2")
	if err != nil {
		log.Fatal(err)
	}
	defer diff.Close()
	f, err := os.Create(arc)
	if err != nil {
		log.Fatal(err)
	}
	if _, err := io.Copy(f, diff); err != nil {
		log.Fatal(err)
	}
	if err := f.Close(); err != nil {
		log.Fatal(err)
	}

	// Inspect: what the archive carries, without a registry.
	plan, err := archive.Inspect(ctx, arc)
	if err != nil {
		log.Fatal(err)
	}
	carried := 0
	for _, b := range plan.Blobs {
		if b.Included {
			carried++
		}
	}
	fmt.Printf("the archive carries %d of %d blobs\n", carried, len(plan.Blobs))

	// Vet, then push, at the far side.
	if err := inc.PushVet(ctx, arc, dst+"/app:v2"); err != nil {
		log.Fatal(err)
	}
	if err := inc.Push(ctx, arc, dst+"/app:v2"); err != nil {
		log.Fatal(err)
	}
	pushed, err := remote.Head(mustParse(dst + "/app:v2"))
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("pushed the source digest:", pushed.Digest == plan.Images[0].Final.Digest)
	// Output:
	// the archive carries 2 of 4 blobs
	// pushed the source digest: true
}

// PushVet names every blob the destination lacks.
func ExampleIncremental_PushVet() {
	src, _, stop := exampleRegistries()
	defer stop()
	ctx := context.Background()
	inc := imo.New(imo.WithPlainHTTP())

	diff, err := inc.Pull(ctx, src+"/app:v1", src+"/app:v2")
	if err != nil {
		log.Fatal(err)
	}
	defer diff.Close()
	f, err := os.CreateTemp("", "difference-*.tar")
	if err != nil {
		log.Fatal(err)
	}
	defer os.Remove(f.Name())
	if _, err := io.Copy(f, diff); err != nil {
		log.Fatal(err)
	}
	f.Close()

	// A new registry does not hold app:v1's layers.
	empty := sandbox.NewRegistry(nil, nil)
	defer empty.Close()
	err = inc.PushVet(ctx, f.Name(), empty.Ref("app:v2"))
	var missing *imo.MissingBlobsError
	if errors.As(err, &missing) {
		fmt.Printf("%d blobs missing; errors.Is(err, ErrMissingBlobs) = %v\n", len(missing.Blobs), errors.Is(err, imo.ErrMissingBlobs))
	}
	// Output:
	// 2 blobs missing; errors.Is(err, ErrMissingBlobs) = true
}

// Resolve a bundle of images once, look at its plan, and write it to a
// file: the blobs are fetched straight into their places.
func ExampleIncremental_Resolve() {
	src, dst, stop := exampleRegistries()
	defer stop()
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "imo-example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)

	inc := imo.New(imo.WithPlainHTTP())
	diff, err := inc.Resolve(ctx, imo.Bundle{
		{Base: src + "/app:v1", Final: src + "/app:v2"},
	})
	if err != nil {
		log.Fatal(err)
	}
	defer diff.Close()
	carried, whole := diff.Plan().Bytes()
	fmt.Println("carries less than the whole image:", carried < whole)
	if err := diff.WriteFile(ctx, filepath.Join(dir, "bundle.tar")); err != nil {
		log.Fatal(err)
	}

	// At the far side: open the archive and push it to a target; each
	// image lands at its source repository path and tag.
	a, err := archive.Open(filepath.Join(dir, "bundle.tar"))
	if err != nil {
		log.Fatal(err)
	}
	defer a.Close()
	results, err := inc.PushArchive(ctx, a, dst)
	if err != nil {
		log.Fatal(err)
	}
	for _, r := range results {
		fmt.Println("pushed", r.Destination.Context().RepositoryStr(), r.Destination.Identifier())
	}
	// Output:
	// carries less than the whole image: true
	// pushed app v2
}

func mustParse(ref string) name.Reference {
	r, err := name.ParseReference(ref)
	if err != nil {
		log.Fatal(err)
	}
	return r
}

// Keep a site's images in an OCI layout directory rather than a registry,
// and send the next version over a one-way link: the earlier archive
// stands for what the site holds.
func ExampleWithSent() {
	src, _, stop := exampleRegistries()
	defer stop()
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "imo-example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	inc := imo.New(imo.WithPlainHTTP())
	site := "oci:" + filepath.Join(dir, "site")

	// The first crossing: v1, whole, into the site's layout.
	first := filepath.Join(dir, "v1.tar")
	write := func(inc *imo.Incremental, pair imo.Pair, path string) {
		d, err := inc.Resolve(ctx, pair)
		if err != nil {
			log.Fatal(err)
		}
		defer d.Close()
		if err := d.WriteFile(ctx, path); err != nil {
			log.Fatal(err)
		}
	}
	write(inc, imo.Pair{Base: imo.Scratch, Final: src + "/app:v1"}, first)
	if err := inc.Push(ctx, first, site+":v1"); err != nil {
		log.Fatal(err)
	}

	// The next: v2, leaving out what the first archive sent.
	a, err := archive.Open(first)
	if err != nil {
		log.Fatal(err)
	}
	sent := imo.New(imo.WithPlainHTTP(), imo.WithSent(a))
	a.Close()
	second := filepath.Join(dir, "v2.tar")
	write(sent, imo.Pair{Base: imo.Scratch, Final: src + "/app:v2"}, second)
	b, err := archive.Open(second)
	if err != nil {
		log.Fatal(err)
	}
	for _, blob := range b.Plan().Blobs { // the config, two shared layers, the new layer
		if blob.Included {
			fmt.Println("carried")
		} else {
			fmt.Println("left out:", blob.Reason)
		}
	}
	b.Close()
	if err := inc.Push(ctx, second, site+":v2"); err != nil {
		log.Fatal(err)
	}

	// The layout now holds both, and is a source like any other.
	for _, tag := range []string{"v1", "v2"} {
		desc, _, err := inc.Manifest(ctx, site+":"+tag, nil)
		if err != nil {
			log.Fatal(err)
		}
		fmt.Println(tag, "in the layout:", desc.MediaType)
	}
	// Output:
	// carried
	// left out: sent before, in v1.tar
	// left out: sent before, in v1.tar
	// carried
	// v1 in the layout: application/vnd.docker.distribution.manifest.v2+json
	// v2 in the layout: application/vnd.docker.distribution.manifest.v2+json
}
