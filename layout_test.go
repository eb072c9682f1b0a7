package imo_test

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/imokit/imo"
	"github.com/imokit/imo/archive"
)

// skopeoLayouts copies app:v1 and app:v2 from src into an OCI layout
// directory, and app:v2 into an oci-archive, with skopeo, and returns
// their paths.
func skopeoLayouts(t *testing.T, src *testRegistry) (dir, tarPath string) {
	t.Helper()
	dir, tarPath = filepath.Join(t.TempDir(), "layout"), filepath.Join(t.TempDir(), "v2.tar")
	for _, tag := range []string{"v1", "v2"} {
		skopeo(t, "copy", "--all", "--src-tls-verify=false", "docker://"+src.ref("app:"+tag), "oci:"+dir+":"+tag)
	}
	skopeo(t, "copy", "--all", "--src-tls-verify=false", "docker://"+src.ref("app:v2"), "oci-archive:"+tarPath+":v2")
	return dir, tarPath
}

// included lists the blobs an archive's plan carries.
func included(t *testing.T, path string) []string {
	t.Helper()
	a, err := archive.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	var out []string
	for _, b := range a.Plan().Blobs {
		if b.Included {
			out = append(out, b.Digest.String())
		}
	}
	slices.Sort(out)
	return out
}

// TestPullFromLayouts pulls from OCI layouts and oci-archives that skopeo
// wrote (converting Docker media types to OCI as it does), on either side,
// and pushes the archive to a registry holding the base: the image lands
// digest for digest as the layout holds it, and the archive leaves out
// what a pull of the same images from a registry leaves out.
func TestPullFromLayouts(t *testing.T) {
	t.Parallel()
	requireBinary(t, "skopeo")
	ctx := context.Background()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			src, _ := setup(t, tc.format, tc.platforms...)
			dir, tarPath := skopeoLayouts(t, src)
			want := fmt.Sprintf("sha256:%x", sha256.Sum256(skopeo(t, "inspect", "--raw", "oci:"+dir+":v2")))
			v1Digest := fmt.Sprintf("sha256:%x", sha256.Sum256(skopeo(t, "inspect", "--raw", "oci:"+dir+":v1")))
			inc := imo.New(imo.WithPlainHTTP())
			// What a registry holding the layout's images would leave out.
			mirror := newTestRegistry(t, nil)
			for _, tag := range []string{"v1", "v2"} {
				skopeo(t, "copy", "--all", "--preserve-digests", "--dest-tls-verify=false", "oci:"+dir+":"+tag, "docker://"+mirror.ref("app:"+tag))
			}
			fromRegistry := included(t, pullFile(t, inc, mirror.ref("app:v1"), mirror.ref("app:v2")))
			for _, p := range []struct{ base, final string }{
				{imo.Scratch, "oci:" + dir + ":v2"},
				{imo.Scratch, "oci-archive:" + tarPath},
				{"oci:" + dir + ":v1", "oci:" + dir + ":v2"},
				{"oci:" + dir + "@" + v1Digest, "oci-archive:" + tarPath + ":v2"},
				{mirror.ref("app:v1"), "oci:" + dir + ":v2"},
				{"oci:" + dir + ":v1", mirror.ref("app:v2")},
			} {
				arc := pullFile(t, inc, p.base, p.final)
				if p.base != imo.Scratch {
					if got := included(t, arc); !slices.Equal(got, fromRegistry) {
						t.Errorf("pull %s %s carries %v; from a registry, %v", p.base, p.final, got, fromRegistry)
					}
				}
				dst := newTestRegistry(t, nil)
				for _, tag := range []string{"v1"} {
					skopeo(t, "copy", "--all", "--preserve-digests", "--dest-tls-verify=false", "oci:"+dir+":"+tag, "docker://"+dst.ref("app:"+tag))
				}
				if err := inc.Push(ctx, arc, dst.ref("app:v2")); err != nil {
					t.Fatalf("push of pull %s %s: %v", p.base, p.final, err)
				}
				if got, err := headDigest(dst.ref("app:v2")); err != nil || got.String() != want {
					t.Errorf("pull %s %s, then push: app:v2 is %v (%v), want %s", p.base, p.final, got, err, want)
				}
			}
		})
	}
}

// ggcrLayout writes a layout of one image tagged v1 with go-containerregistry.
func ggcrLayout(t *testing.T) (string, v1.Image) {
	t.Helper()
	pair := newAppPair(t, oci, "linux/amd64")
	dir := filepath.Join(t.TempDir(), "layout")
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		t.Fatal(err)
	}
	img := pair.V1.(v1.Image)
	if err := p.AppendImage(img, layout.WithAnnotations(map[string]string{archive.RefNameAnnotation: "v1"})); err != nil {
		t.Fatal(err)
	}
	return dir, img
}

// TestLayoutErrors checks that every way a layout source can be wrong gets
// an error naming the place, the image or the blob.
func TestLayoutErrors(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	for _, tc := range []struct {
		name    string
		final   func(t *testing.T) string
		wantIs  error
		wantErr []string
	}{
		{"no such directory", func(t *testing.T) string { return "oci:" + filepath.Join(t.TempDir(), "none") + ":v1" }, nil, []string{"none", "no such file"}},
		{"not a layout", func(t *testing.T) string { return "oci:" + t.TempDir() + ":v1" }, imo.ErrInvalidLayout, []string{"no oci-layout file"}},
		{"no such tag", func(t *testing.T) string {
			dir, _ := ggcrLayout(t)
			return "oci:" + dir + ":v9"
		}, nil, []string{`no image named "v9"`, "it has v1"}},
		{"no such digest", func(t *testing.T) string {
			dir, _ := ggcrLayout(t)
			return "oci:" + dir + "@sha256:" + strings.Repeat("0", 64)
		}, nil, []string{"lists no image sha256:000"}},
		{"missing blob", func(t *testing.T) string {
			dir, img := ggcrLayout(t)
			l, _ := img.Layers()
			h, _ := l[0].Digest()
			os.Remove(filepath.Join(dir, "blobs", "sha256", h.Hex))
			return "oci:" + dir + ":v1"
		}, imo.ErrBlobNotInLayout, []string{"blob not in the layout", "layout"}},
		{"corrupt blob", func(t *testing.T) string {
			dir, img := ggcrLayout(t)
			l, _ := img.Layers()
			h, _ := l[0].Digest()
			path := filepath.Join(dir, "blobs", "sha256", h.Hex)
			b, _ := os.ReadFile(path)
			b[len(b)/2] ^= 1
			os.WriteFile(path, b, 0o644)
			return "oci:" + dir + ":v1"
		}, imo.ErrDigestMismatch, []string{"oci:"}},
		{"oci-archive of a directory", func(t *testing.T) string {
			dir, _ := ggcrLayout(t)
			return "oci-archive:" + dir
		}, imo.ErrInvalidArchive, []string{"is a directory", "oci:" + "/"}},
		{"oci-archive that is not a tar", func(t *testing.T) string {
			path := filepath.Join(t.TempDir(), "x.tar")
			os.WriteFile(path, []byte("not a tar at all, not even close to one, no"), 0o644)
			return "oci-archive:" + path
		}, imo.ErrInvalidArchive, []string{"x.tar"}},
		{"bad tag", func(t *testing.T) string { return "oci:dir:bad tag" }, imo.ErrInvalidReference, []string{"bad tag"}},
		{"no path", func(t *testing.T) string { return "oci:" }, imo.ErrInvalidReference, []string{"no path"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			final := tc.final(t)
			path := filepath.Join(t.TempDir(), "out.tar")
			d, err := imo.New().Resolve(ctx, imo.Pair{Base: imo.Scratch, Final: final})
			if err == nil {
				err = d.WriteFile(ctx, path)
				d.Close()
			}
			if err == nil {
				t.Fatalf("pull of %s succeeded", final)
			}
			if tc.wantIs != nil && !errors.Is(err, tc.wantIs) {
				t.Errorf("pull of %s = %v, want %v", final, err, tc.wantIs)
			}
			for _, s := range tc.wantErr {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("pull of %s = %v, want it to say %q", final, err, s)
				}
			}
		})
	}
}

// snapshot lists every file under dir with its bytes, to show that a
// failed push changed nothing.
func snapshot(t *testing.T, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		out[p] = string(b)
		return err
	})
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	return out
}

// TestLayoutRoundTrip carries images registry → layout → imo archive →
// layout → registry, and checks the digest at every step, with skopeo
// reading the layout imo wrote.
func TestLayoutRoundTrip(t *testing.T) {
	t.Parallel()
	requireBinary(t, "skopeo")
	ctx := context.Background()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			src, pair := setup(t, tc.format, tc.platforms...)
			want := map[string]string{"v1": digest(t, pair.V1).String(), "v2": digest(t, pair.V2).String()}
			inc := imo.New(imo.WithPlainHTTP())
			site := filepath.Join(t.TempDir(), "site")
			// The site's layout gets v1 whole, then the difference to v2.
			whole := pullFile(t, inc, imo.Scratch, src.ref("app:v1"))
			if err := inc.Push(ctx, whole, "oci:"+site+":v1"); err != nil {
				t.Fatalf("push of v1 into a new layout: %v", err)
			}
			diff := pullFile(t, inc, src.ref("app:v1"), src.ref("app:v2"))
			if err := inc.PushVet(ctx, diff, "oci:"+site); err != nil {
				t.Fatalf("vet of the difference against the layout holding v1: %v", err)
			}
			if err := inc.Push(ctx, diff, "oci:"+site); err != nil {
				t.Fatalf("push of the difference into the layout: %v", err)
			}
			// skopeo 1.9 looks only at index.json entries of OCI media
			// types: a layout of Docker images, digests kept, is for imo,
			// containerd and zot.
			if tc.format == oci {
				for tag, d := range want {
					if got := fmt.Sprintf("sha256:%x", sha256.Sum256(skopeo(t, "inspect", "--raw", "oci:"+site+":"+tag))); got != d {
						t.Errorf("skopeo reads oci:%s:%s as %s, want %s", site, tag, got, d)
					}
				}
			}
			// From the layout to a registry, by imo (and by skopeo).
			dst := newTestRegistry(t, nil)
			for _, tag := range []string{"v1", "v2"} {
				if tc.format == oci && tag == "v1" {
					skopeo(t, "copy", "--all", "--preserve-digests", "--dest-tls-verify=false", "oci:"+site+":v1", "docker://"+dst.ref("app:v1"))
					continue
				}
				if err := inc.Push(ctx, pullFile(t, inc, imo.Scratch, "oci:"+site+":"+tag), dst.ref("app:"+tag)); err != nil {
					t.Fatal(err)
				}
			}
			for tag, d := range want {
				if got, err := headDigest(dst.ref("app:" + tag)); err != nil || got.String() != d {
					t.Errorf("app:%s in the registry is %v (%v), want %s", tag, got, err, d)
				}
			}
		})
	}
}

// TestLayoutDestination checks vet's and push's refusals at a layout, and
// that a push that fails leaves the layout exactly as it was.
func TestLayoutDestination(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	src, pair := setup(t, docker, "linux/amd64")
	inc := imo.New(imo.WithPlainHTTP())
	diff := pullFile(t, inc, src.ref("app:v1"), src.ref("app:v2"))
	whole := pullFile(t, inc, imo.Scratch, src.ref("app:v1"))

	t.Run("vet names what a layout lacks", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "site")
		for _, d := range []string{"oci:" + dir, "oci:" + dir + ":v2"} {
			err := inc.PushVet(ctx, diff, d)
			var missing *imo.MissingBlobsError
			if !errors.As(err, &missing) || missing.Repository != "oci:"+dir || len(missing.Blobs) == 0 {
				t.Errorf("vet against %s (nothing there) = %v, want the missing blobs of oci:%s", d, err, dir)
			}
			if err := inc.Push(ctx, diff, d); !errors.Is(err, imo.ErrMissingBlobs) {
				t.Errorf("push to %s = %v, want ErrMissingBlobs", d, err)
			}
			if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("a push that failed to vet created %s", dir)
			}
		}
	})

	t.Run("a failed push leaves the layout as it was", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "site")
		if err := inc.Push(ctx, whole, "oci:"+dir+":v1"); err != nil {
			t.Fatal(err)
		}
		before := snapshot(t, dir)
		b, err := os.ReadFile(diff)
		if err != nil {
			t.Fatal(err)
		}
		layer, err := pair.V2.(v1.Image).LayerByDigest(pair.Changed[0])
		if err != nil {
			t.Fatal(err)
		}
		rc, _ := layer.Compressed()
		content := make([]byte, 64)
		rc.Read(content)
		rc.Close()
		at := strings.Index(string(b), string(content))
		if at < 0 {
			t.Fatal("the changed layer is not in the archive")
		}
		b[at+10] ^= 0xff
		corrupt := filepath.Join(t.TempDir(), "corrupt.tar")
		os.WriteFile(corrupt, b, 0o644)
		if err := inc.Push(ctx, corrupt, "oci:"+dir+":v2"); !errors.Is(err, imo.ErrDigestMismatch) {
			t.Errorf("push of a corrupt archive = %v, want ErrDigestMismatch", err)
		}
		after := snapshot(t, dir)
		for p := range after {
			if _, ok := before[p]; !ok {
				t.Errorf("a failed push left %s", p)
			}
		}
		for p, c := range before {
			if after[p] != c {
				t.Errorf("a failed push changed %s", p)
			}
		}
	})

	t.Run("an empty directory becomes a layout", func(t *testing.T) {
		dir := t.TempDir()
		if err := inc.PushVet(ctx, whole, "oci:"+dir); err != nil {
			t.Errorf("vet of a whole image against an empty directory = %v", err)
		}
		if err := inc.Push(ctx, whole, "oci:"+dir+":v1"); err != nil {
			t.Errorf("push into an empty directory = %v", err)
		}
		if _, err := os.Stat(filepath.Join(dir, "oci-layout")); err != nil {
			t.Errorf("the empty directory is no layout after the push: %v", err)
		}
	})

	t.Run("refusals", func(t *testing.T) {
		file := filepath.Join(t.TempDir(), "file")
		os.WriteFile(file, []byte("x"), 0o644)
		other := t.TempDir()
		os.WriteFile(filepath.Join(other, "notes.txt"), []byte("x"), 0o644)
		for _, tc := range []struct {
			dst  string
			want string
		}{
			{"oci:" + file, "is a file"},
			{"oci:" + other, "no oci-layout file"},
			{"oci:" + other + "@sha256:" + strings.Repeat("a", 64), "oci:DIR[:TAG]"},
		} {
			if err := inc.Push(ctx, whole, tc.dst); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("push to %s = %v, want it to say %q", tc.dst, err, tc.want)
			}
		}
		if b, _ := os.ReadFile(file); string(b) != "x" {
			t.Error("a refused push changed the file in the way")
		}
		if entries, _ := os.ReadDir(other); len(entries) != 1 {
			t.Errorf("a refused push wrote into a directory that is not a layout: %v", entries)
		}
	})
}

// TestBundleFromLayouts pulls a bundle whose images come from a layout:
// into a layout they go named as the bundle names them, and a registry
// target, which needs repository paths, refuses them clearly.
func TestBundleFromLayouts(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	src, _ := setup(t, docker, "linux/amd64")
	inc := imo.New(imo.WithPlainHTTP())
	site := "oci:" + filepath.Join(t.TempDir(), "site")
	for _, tag := range []string{"v1", "v2"} {
		if err := inc.Push(ctx, pullFile(t, inc, imo.Scratch, src.ref("app:"+tag)), site+":"+tag); err != nil {
			t.Fatal(err)
		}
	}
	d, err := inc.Resolve(ctx, imo.Bundle{{Base: imo.Scratch, Final: site + ":v1"}, {Base: site + ":v1", Final: site + ":v2"}})
	if err != nil {
		t.Fatal(err)
	}
	bundle := filepath.Join(t.TempDir(), "bundle.tar")
	err = d.WriteFile(ctx, bundle)
	d.Close()
	if err != nil {
		t.Fatal(err)
	}
	dst := newTestRegistry(t, nil)
	if err := inc.Push(ctx, bundle, dst.ref("mirror")); !errors.Is(err, imo.ErrInvalidTarget) || !strings.Contains(err.Error(), "no repository path") {
		t.Errorf("push of a bundle from a layout to a registry target = %v, want ErrInvalidTarget saying why", err)
	}
	other := "oci:" + filepath.Join(t.TempDir(), "other")
	if err := inc.Push(ctx, bundle, other); err != nil {
		t.Fatalf("push of the bundle into a layout: %v", err)
	}
	for _, tag := range []string{"v1", "v2"} {
		want := pullFile(t, inc, imo.Scratch, site+":"+tag)
		got := pullFile(t, inc, imo.Scratch, other+":"+site+":"+tag)
		if w, g := included(t, want), included(t, got); !slices.Equal(w, g) {
			t.Errorf("%s in the other layout carries %v, want %v", tag, g, w)
		}
	}
}
