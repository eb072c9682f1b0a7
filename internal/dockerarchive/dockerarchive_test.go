package dockerarchive

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/imokit/imo/internal/verify"
)

// saveImage writes a random image as go-containerregistry's tarball
// package writes docker save's format, tagged tag.
func saveImage(t testing.TB, tag string) (string, v1.Image) {
	t.Helper()
	img, err := random.Image(512, 3)
	if err != nil {
		t.Fatal(err)
	}
	ref, err := name.NewTag(tag)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "saved.tar")
	if err := tarball.WriteToFile(path, ref, img); err != nil {
		t.Fatal(err)
	}
	return path, img
}

func TestOpen(t *testing.T) {
	ctx := context.Background()
	path, img := saveImage(t, "reg.example/app:v1")
	for _, tag := range []string{"", "reg.example/app:v1"} {
		d, err := Open(path, tag)
		if err != nil {
			t.Fatalf("Open(%q) = %v", tag, err)
		}
		raw, err := d.Manifest(ctx, d.Top())
		if err != nil {
			t.Fatal(err)
		}
		m, err := v1.ParseManifest(bytes.NewReader(raw))
		if err != nil {
			t.Fatal(err)
		}
		cf, _ := img.ConfigFile()
		wantConfig, _ := img.ConfigName()
		if m.Config.Digest != wantConfig || len(m.Layers) != len(cf.RootFS.DiffIDs) {
			t.Fatalf("built manifest %s, want config %s and %d layers", raw, wantConfig, len(cf.RootFS.DiffIDs))
		}
		// go-containerregistry writes the registry's gzip blobs: the same
		// digests. (skopeo's uncompressed layers are tested at the root.)
		orig, _ := img.Manifest()
		for k, l := range m.Layers {
			if l.Digest != orig.Layers[k].Digest || l.MediaType != orig.Layers[k].MediaType {
				t.Errorf("layer %d is %s %s, want the registry's %s %s", k, l.MediaType, l.Digest, orig.Layers[k].MediaType, orig.Layers[k].Digest)
			}
			rc, err := d.Blob(ctx, l, nil)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := io.Copy(io.Discard, rc); err != nil {
				t.Errorf("layer %d does not verify: %v", k, err)
			}
		}
		wrong := m.Layers[0]
		wrong.Digest = m.Config.Digest
		if _, err := d.Blob(ctx, wrong, nil); !errors.Is(err, verify.ErrMismatch) {
			t.Errorf("Blob() of a wrong size = %v, want a mismatch", err)
		}
		d.Close()
	}
	if _, err := Open(path, "reg.example/app:v2"); err == nil || !strings.Contains(err.Error(), "it has reg.example/app:v1") {
		t.Errorf("Open() of a tag it lacks = %v", err)
	}
}

// FuzzOpen opens anything as a docker-archive: it may be refused, never
// crash imo or make it read past the file.
func FuzzOpen(f *testing.F) {
	path, _ := saveImage(f, "reg.example/app:v1")
	b, err := os.ReadFile(path)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(b, "")
	f.Add(b[:len(b)/2], "app:v1")
	f.Fuzz(func(t *testing.T, b []byte, tag string) {
		path := filepath.Join(t.TempDir(), "x.tar")
		if err := os.WriteFile(path, b, 0o644); err != nil {
			t.Fatal(err)
		}
		d, err := Open(path, tag)
		if err != nil {
			return
		}
		defer d.Close()
		ctx := context.Background()
		raw, err := d.Manifest(ctx, d.Top())
		if err != nil {
			t.Fatal(err)
		}
		m, err := v1.ParseManifest(bytes.NewReader(raw))
		if err != nil {
			t.Fatalf("the built manifest does not parse: %v", err)
		}
		for _, l := range m.Layers {
			if rc, err := d.Blob(ctx, l, nil); err == nil {
				io.Copy(io.Discard, rc)
			}
		}
	})
}
