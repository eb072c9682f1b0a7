package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/imokit/imo"
	"github.com/imokit/imo/archive"
	"github.com/imokit/imo/internal/sandbox"
)

// build assembles the image of two platforms around stand-in binaries and
// writes it into dir.
func build(t *testing.T, dir string) (string, string) {
	t.Helper()
	certs, err := caBundle()
	if err != nil {
		t.Fatal(err)
	}
	created := time.Date(2026, 11, 30, 0, 0, 0, 0, time.UTC)
	o := options{version: "v1.2.3", revision: "0123abc", tag: "v1.2.3"}
	var images []platformImage
	for _, p := range []string{"linux/amd64", "linux/arm64"} {
		bin := filepath.Join(dir, "imo-"+filepath.Base(p))
		if err := os.WriteFile(bin, bytes.Repeat([]byte(p), 1000), 0o755); err != nil {
			t.Fatal(err)
		}
		img, err := newPlatformImage(p, bin, certs, created, o)
		if err != nil {
			t.Fatal(err)
		}
		images = append(images, img)
	}
	out := filepath.Join(dir, "image.tar")
	idx, err := writeArchive(context.Background(), out, o.tag, images)
	if err != nil {
		t.Fatal(err)
	}
	return out, idx.String()
}

// TestImage checks that the image is reproducible, reads as an OCI layout
// with both platforms, runs as a non-root user, and pushes digest for
// digest.
func TestImage(t *testing.T) {
	first, digest := build(t, t.TempDir())
	second, again := build(t, t.TempDir())
	a, _ := os.ReadFile(first)
	b, _ := os.ReadFile(second)
	if digest != again || !bytes.Equal(a, b) {
		t.Fatalf("two builds differ: index %s and %s", digest, again)
	}
	plan, err := archive.Inspect(context.Background(), first)
	if err != nil {
		t.Fatal(err)
	}
	if img := plan.Images[0]; img.Final.Digest.String() != digest || len(img.Platforms) != 2 || img.Final.Reference != "v1.2.3" {
		t.Errorf("the archive holds %+v, want the index %s of two platforms, named v1.2.3", img, digest)
	}

	reg := sandbox.NewRegistry(nil, nil)
	defer reg.Close()
	if err := imo.New(imo.WithPlainHTTP()).Push(context.Background(), first, reg.Ref("imo:v1.2.3")); err != nil {
		t.Fatal(err)
	}
	ref, err := name.ParseReference(reg.Ref("imo:v1.2.3"), name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	idx, err := remote.Index(ref)
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := idx.Digest(); got.String() != digest {
		t.Errorf("pushed the index as %s, want %s", got, digest)
	}
	m, _ := idx.IndexManifest()
	img, err := idx.Image(m.Manifests[0].Digest)
	if err != nil {
		t.Fatal(err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if cf.Config.User != user || len(cf.Config.Entrypoint) != 1 || cf.Config.Entrypoint[0] != "/imo" || cf.Config.Labels["org.opencontainers.image.revision"] != "0123abc" {
		t.Errorf("config = %+v, want user %s, entrypoint /imo and the labels", cf.Config, user)
	}
}
