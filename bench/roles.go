package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"golang.org/x/sync/errgroup"
)

// floor is the raw transfer: plain HTTP GETs of the given blobs into one
// file each, jobs at a time, with no checking at all — or, with verify,
// with each blob's SHA-256 checked, which is the least a tool that can be
// trusted must add.
// Arguments: REGISTRY-URL REPO OUTDIR JOBS DIGEST...
func floor(ctx context.Context, args []string, verify bool) error {
	if len(args) < 4 {
		return fmt.Errorf("floor: want URL REPO OUTDIR JOBS and one or more digests")
	}
	base, repo, out := args[0], args[1], args[2]
	jobs, err := strconv.Atoi(args[3])
	if err != nil {
		return err
	}
	eg, ectx := errgroup.WithContext(ctx)
	eg.SetLimit(jobs)
	for _, d := range args[4:] {
		eg.Go(func() error {
			req, err := http.NewRequestWithContext(ectx, http.MethodGet, base+"/v2/"+repo+"/blobs/"+d, nil)
			if err != nil {
				return err
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				return err
			}
			defer resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				return fmt.Errorf("GET %s: %s", d, resp.Status)
			}
			f, err := os.Create(filepath.Join(out, d))
			if err != nil {
				return err
			}
			var w io.Writer = f
			h := sha256.New()
			if verify {
				w = io.MultiWriter(f, h)
			}
			if _, err := io.Copy(w, resp.Body); err != nil {
				f.Close()
				return err
			}
			if verify && "sha256:"+hex.EncodeToString(h.Sum(nil)) != d {
				f.Close()
				return fmt.Errorf("%s: digest mismatch", d)
			}
			return f.Close()
		})
	}
	return eg.Wait()
}

// ggcrPush is what crane push does with a layout directory: push its first
// image with go-containerregistry's remote.Write.
// Arguments: LAYOUT-DIR REF
func ggcrPush(_ context.Context, args []string) error {
	if len(args) != 2 {
		return fmt.Errorf("ggcr-push: want LAYOUT-DIR REF")
	}
	p, err := layout.FromPath(args[0])
	if err != nil {
		return err
	}
	idx, err := p.ImageIndex()
	if err != nil {
		return err
	}
	im, err := idx.IndexManifest()
	if err != nil {
		return err
	}
	ref, err := name.ParseReference(args[1])
	if err != nil {
		return err
	}
	d := im.Manifests[0]
	if d.MediaType.IsIndex() {
		child, err := idx.ImageIndex(d.Digest)
		if err != nil {
			return err
		}
		return remote.WriteIndex(ref, child)
	}
	img, err := idx.Image(d.Digest)
	if err != nil {
		return err
	}
	return remote.Write(ref, img)
}

// ggcrPull is what crane pull --format=oci does: write an image into an OCI
// layout directory with go-containerregistry.
// Arguments: REF LAYOUT-DIR
func ggcrPull(_ context.Context, args []string) error {
	if len(args) != 2 {
		return fmt.Errorf("ggcr-pull: want REF LAYOUT-DIR")
	}
	ref, err := name.ParseReference(args[0])
	if err != nil {
		return err
	}
	img, err := remote.Image(ref)
	if err != nil {
		return err
	}
	p, err := layout.Write(args[1], empty.Index)
	if err != nil {
		return err
	}
	return p.AppendImage(img)
}
