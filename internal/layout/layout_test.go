package layout

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/imokit/imo/archive"
)

// newLayout writes a layout holding one blob and the given index.json.
func newLayout(t testing.TB, index string) (string, v1.Descriptor) {
	t.Helper()
	dir := t.TempDir()
	blob := []byte(`{"schemaVersion":2}`)
	h, size, _ := v1.SHA256(strings.NewReader(string(blob)))
	os.MkdirAll(filepath.Join(dir, "blobs", "sha256"), 0o755)
	os.WriteFile(filepath.Join(dir, "blobs", "sha256", h.Hex), blob, 0o644)
	os.WriteFile(filepath.Join(dir, archive.LayoutFile), []byte(layoutMarker), 0o644)
	os.WriteFile(filepath.Join(dir, archive.IndexFile), []byte(index), 0o644)
	return dir, v1.Descriptor{MediaType: types.OCIManifestSchema1, Digest: h, Size: size}
}

func TestFind(t *testing.T) {
	d := func(hex, name string) v1.Descriptor {
		desc := v1.Descriptor{Digest: v1.Hash{Algorithm: "sha256", Hex: strings.Repeat(hex, 64)}}
		if name != "" {
			desc.Annotations = map[string]string{archive.RefNameAnnotation: name}
		}
		return desc
	}
	idx := &v1.IndexManifest{Manifests: []v1.Descriptor{d("a", "v1"), d("b", "v2"), d("c", ""), d("b", "v2")}}
	for _, tc := range []struct {
		tag, digest string
		want        string // hex digit of the image found, or "" for an error
		err         string
	}{
		{"v1", "", "a", ""},
		{"v2", "", "b", ""},
		{"", "sha256:" + strings.Repeat("c", 64), "c", ""},
		{"v1", "sha256:" + strings.Repeat("a", 64), "a", ""},
		{"v1", "sha256:" + strings.Repeat("b", 64), "", `no image sha256:bbb`},
		{"v9", "", "", `no image named "v9": it has v1, v2`},
		{"", "", "", "holds 4 images: name one (it has v1, v2)"},
	} {
		got, err := Find(idx, "oci:x", tc.tag, tc.digest)
		switch {
		case tc.want != "" && (err != nil || got.Digest.Hex[:1] != tc.want):
			t.Errorf("Find(%q, %q) = %v, %v; want %s", tc.tag, tc.digest, got.Digest, err, tc.want)
		case tc.want == "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
			t.Errorf("Find(%q, %q) = %v; want an error saying %q", tc.tag, tc.digest, err, tc.err)
		}
		var nf *NotFoundError
		if tc.want == "" && !errors.As(err, &nf) {
			t.Errorf("Find(%q, %q) = %T, want a *NotFoundError", tc.tag, tc.digest, err)
		}
	}
	two := &v1.IndexManifest{Manifests: []v1.Descriptor{d("a", "v1"), d("b", "v1")}}
	if _, err := Find(two, "oci:x", "v1", ""); err == nil || !strings.Contains(err.Error(), "name it by digest") {
		t.Errorf("Find of a name given to two images = %v, want an error", err)
	}
}

func TestBlobs(t *testing.T) {
	ctx := context.Background()
	dir, desc := newLayout(t, `{"schemaVersion":2,"manifests":[]}`)
	l, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if raw, err := l.Manifest(ctx, desc); err != nil || string(raw) != `{"schemaVersion":2}` {
		t.Errorf("Manifest() = %q, %v", raw, err)
	}
	wrong := desc
	wrong.Size++
	if _, err := l.Manifest(ctx, wrong); err == nil {
		t.Error("Manifest() of the wrong size succeeded")
	}
	other := desc
	other.Digest.Hex = strings.Repeat("0", 64)
	if _, err := l.Blob(ctx, other, nil); !errors.Is(err, ErrBlobNotFound) || !strings.Contains(err.Error(), other.Digest.String()) {
		t.Errorf("Blob() of a blob not there = %v, want ErrBlobNotFound naming it", err)
	}
	rc, err := l.BlobFrom(ctx, desc, 2, nil)
	if err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 64)
	n, _ := rc.Read(b)
	rc.Close()
	if string(b[:n]) != `schemaVersion":2}` {
		t.Errorf("BlobFrom(2) read %q", b[:n])
	}
}

func TestWrite(t *testing.T) {
	ctx := context.Background()
	src, desc := newLayout(t, `{"schemaVersion":2,"manifests":[]}`)
	from, err := Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer from.Close()
	dir := filepath.Join(t.TempDir(), "new")
	l, err := Create(ctx, dir)
	if err != nil {
		t.Fatalf("Create() = %v", err)
	}
	for range 2 { // the second time, it is there
		rc, _ := from.Blob(ctx, desc, nil)
		err := l.WriteBlob(ctx, desc, rc)
		rc.Close()
		if err != nil {
			t.Fatalf("WriteBlob() = %v", err)
		}
		if has, _ := l.Has(desc); !has {
			t.Error("WriteBlob() wrote nothing")
		}
	}
	named := desc
	named.Annotations = map[string]string{archive.RefNameAnnotation: "v1"}
	if err := l.SetImages([]v1.Descriptor{named}); err != nil {
		t.Fatal(err)
	}
	moved := named
	moved.Digest.Hex = strings.Repeat("f", 64)
	if err := l.SetImages([]v1.Descriptor{desc, moved}); err != nil {
		t.Fatal(err)
	}
	l.Close()
	again, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer again.Close()
	m := again.Index().Manifests
	if len(m) != 2 || m[0].Annotations != nil || m[1].Digest != moved.Digest {
		t.Errorf("index.json after a tag moved: %v, want the unnamed image and v1 at its new digest", m)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 3 {
		t.Errorf("the layout holds %v, want oci-layout, index.json and blobs alone", entries)
	}
}

// TestUndo checks that Undo leaves every kind of destination as it was:
// a directory that did not exist, an empty one, and a layout without a
// blobs directory yet.
func TestUndo(t *testing.T) {
	ctx := context.Background()
	src, desc := newLayout(t, `{"schemaVersion":2,"manifests":[]}`)
	from, err := Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer from.Close()
	bare := t.TempDir() // a layout with no blobs directory
	os.WriteFile(filepath.Join(bare, archive.LayoutFile), []byte(layoutMarker), 0o644)
	os.WriteFile(filepath.Join(bare, archive.IndexFile), []byte(`{"schemaVersion":2,"manifests":[]}`), 0o644)
	for name, dir := range map[string]string{"absent": filepath.Join(t.TempDir(), "absent"), "empty": t.TempDir(), "bare layout": bare} {
		before, _ := os.ReadDir(dir)
		l, err := Create(ctx, dir)
		if err != nil {
			t.Fatalf("%s: Create() = %v", name, err)
		}
		rc, _ := from.Blob(ctx, desc, nil)
		if err := l.WriteBlob(ctx, desc, rc); err != nil {
			t.Fatal(err)
		}
		rc.Close()
		l.Undo()
		l.Close()
		after, _ := os.ReadDir(dir)
		if len(after) != len(before) {
			t.Errorf("%s: after Undo the directory holds %v, before %v", name, after, before)
		}
	}
}

// FuzzOpen opens layouts whose index.json is anything, and looks images up
// in them: a hostile layout may be refused, never crash imo.
func FuzzOpen(f *testing.F) {
	f.Add(`{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:`+strings.Repeat("a", 64)+`","size":2,"annotations":{"org.opencontainers.image.ref.name":"v1"}}]}`, "v1", "")
	f.Add(`{"manifests":null}`, "", "sha256:"+strings.Repeat("b", 64))
	f.Add(`[]`, "x", "")
	f.Fuzz(func(t *testing.T, index, tag, digest string) {
		dir, _ := newLayout(t, index)
		l, err := Open(dir)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("Open() = %v, want ErrInvalid", err)
			}
			return
		}
		defer l.Close()
		desc, err := Find(l.Index(), l.Name(), tag, digest)
		if err != nil {
			return
		}
		if _, err := l.Manifest(context.Background(), desc); err == nil && desc.Size > 1<<20 {
			t.Fatalf("Manifest() read a %d-byte manifest", desc.Size)
		}
	})
}
