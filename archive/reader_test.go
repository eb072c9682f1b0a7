package archive

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/imokit/imo/internal/graph"
)

// testEntry is one entry of a hand-made tar.
type testEntry struct {
	name     string
	body     []byte
	typeflag byte
	size     int64 // declared size when not len(body)
}

func makeTar(t testing.TB, entries ...testEntry) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		h := &tar.Header{Name: e.name, Mode: 0o644, Size: int64(len(e.body)), Typeflag: e.typeflag}
		if h.Typeflag == 0 {
			h.Typeflag = tar.TypeReg
		}
		if h.Typeflag == tar.TypeXGlobalHeader {
			h = &tar.Header{Typeflag: h.Typeflag, Name: e.name, PAXRecords: map[string]string{"comment": "made by GNU tar"}}
		}
		if h.Typeflag == tar.TypeSymlink {
			h.Linkname, h.Size = "/etc/passwd", 0
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write(e.body); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	b := buf.Bytes()
	for _, e := range entries {
		if e.size != 0 {
			// Rewrite the size field of the first header to lie.
			hdr := &tar.Header{Name: e.name, Mode: 0o644, Size: e.size, Typeflag: tar.TypeReg}
			var hb bytes.Buffer
			htw := tar.NewWriter(&hb)
			if err := htw.WriteHeader(hdr); err != nil {
				t.Fatal(err)
			}
			copy(b, hb.Bytes()[:512])
		}
	}
	return b
}

// validEntries is a small, complete archive of one image.
func validEntries(t testing.TB) []testEntry {
	t.Helper()
	config := []byte(`{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}`)
	ch, _, _ := v1.SHA256(bytes.NewReader(config))
	m := v1.Manifest{SchemaVersion: 2, MediaType: types.OCIManifestSchema1,
		Config: v1.Descriptor{MediaType: types.OCIConfigJSON, Digest: ch, Size: int64(len(config))}}
	raw, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	mh, _, _ := v1.SHA256(bytes.NewReader(raw))
	index, err := json.Marshal(v1.IndexManifest{SchemaVersion: 2, Manifests: []v1.Descriptor{{MediaType: types.OCIManifestSchema1, Digest: mh, Size: int64(len(raw))}}})
	if err != nil {
		t.Fatal(err)
	}
	return []testEntry{
		{name: LayoutFile, body: []byte(`{"imageLayoutVersion":"1.0.0"}`)},
		{name: IndexFile, body: index},
		{name: "blobs/sha256/" + mh.Hex, body: raw},
		{name: "./blobs/sha256/" + ch.Hex, body: config},
	}
}

func readAndWalk(b []byte) error {
	a, err := read("test.tar", bytes.NewReader(b))
	if err != nil {
		return err
	}
	_, err = a.Check(context.Background())
	return err
}

func TestRead(t *testing.T) {
	valid := validEntries(t)
	with := func(extra ...testEntry) []byte {
		return makeTar(t, append(append([]testEntry{}, valid...), extra...)...)
	}
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write(makeTar(t, valid...))
	zw.Close()
	whole := makeTar(t, valid...)

	tests := []struct {
		name    string
		archive []byte
		wantErr error
	}{
		{"valid", whole, nil},
		{"empty file", nil, ErrInvalid},
		{"not a tar", []byte("hello, this is not a tar archive at all"), ErrInvalid},
		{"gzip-compressed", gz.Bytes(), ErrInvalid},
		{"truncated", whole[:len(whole)/2], ErrInvalid},
		{"absolute name", with(testEntry{name: "/etc/passwd", body: []byte("x")}), ErrInvalid},
		{"dot-dot", with(testEntry{name: "blobs/../../evil", body: []byte("x")}), ErrInvalid},
		{"symlink", with(testEntry{name: "blobs/sha256/link", typeflag: tar.TypeSymlink}), ErrInvalid},
		{"duplicate", with(valid[1]), ErrInvalid},
		{"size beyond the end", makeTar(t, testEntry{name: LayoutFile, body: []byte("{}"), size: 1 << 40}), ErrInvalid},
		{"no oci-layout", makeTar(t, valid[1:]...), ErrInvalid},
		{"no index.json", makeTar(t, valid[0], valid[2], valid[3]), ErrInvalid},
		{"index.json does not parse", makeTar(t, valid[0], testEntry{name: IndexFile, body: []byte("{")}), ErrInvalid},
		{"index.json lists nothing", makeTar(t, valid[0], testEntry{name: IndexFile, body: []byte(`{"schemaVersion":2,"manifests":[]}`)}), ErrInvalid},
		{"manifest missing", makeTar(t, valid[0], valid[1], valid[3]), ErrInvalid},
		{"manifest altered", makeTar(t, valid[0], valid[1], testEntry{name: valid[2].name, body: bytes.ToUpper(valid[2].body)}, valid[3]), ErrDigestMismatch},
		{"cut off between entries", whole[:tarEnd(t, whole)-1024], ErrInvalid},
		{"pax global header", makeTar(t, append([]testEntry{{name: "pax_global_header", typeflag: tar.TypeXGlobalHeader}}, valid...)...), nil},
		{"index listing one manifest many times", repeatedIndex(t, valid, 1, 5000), nil},
		{"indexes nested too deep", repeatedIndex(t, valid, 12, 1), graph.ErrInvalidManifest},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := readAndWalk(tc.archive)
			if !errors.Is(err, tc.wantErr) || (tc.wantErr != nil && err == nil) {
				t.Errorf("reading = %v, want %v", err, tc.wantErr)
			}
		})
	}
}

// TestDockerArchive checks that a docker save tar is named as such.
func TestDockerArchive(t *testing.T) {
	for name, b := range map[string][]byte{
		"with links": makeTar(t,
			testEntry{name: "abc/layer.tar", typeflag: tar.TypeSymlink},
			testEntry{name: "manifest.json", body: []byte(`[{"Config":"c.json","Layers":["abc/layer.tar"]}]`)}),
		"without links": makeTar(t,
			testEntry{name: "abc.tar", body: []byte("x")},
			testEntry{name: "manifest.json", body: []byte(`[{"Config":"c.json","Layers":["abc.tar"]}]`)}),
	} {
		if err := readAndWalk(b); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "docker-archive") {
			t.Errorf("reading a docker-archive %s = %v, want it named a docker-archive", name, err)
		}
	}
}

// TestTruncatedAnywhere cuts a valid archive at many points: every cut
// must be refused.
func TestTruncatedAnywhere(t *testing.T) {
	whole := makeTar(t, validEntries(t)...)
	end := tarEnd(t, whole)
	for cut := 0; cut < end; cut += 97 {
		if err := readAndWalk(whole[:cut]); !errors.Is(err, ErrInvalid) {
			t.Errorf("reading the archive cut at byte %d of %d = %v, want ErrInvalid", cut, end, err)
		}
	}
}

// tarEnd returns the length of a tar's content without any padding after
// its trailer.
func tarEnd(t testing.TB, b []byte) int {
	t.Helper()
	n := len(b)
	for n > 0 && b[n-1] == 0 {
		n--
	}
	return (n+511)/512*512 + 1024
}

// repeatedIndex builds an archive of depth nested indexes over the valid
// image, each listing the one below width times.
func repeatedIndex(t testing.TB, valid []testEntry, depth, width int) []byte {
	t.Helper()
	entries := append([]testEntry{valid[0]}, valid[2:]...)
	var below v1.IndexManifest
	if err := json.Unmarshal(valid[1].body, &below); err != nil {
		t.Fatal(err)
	}
	child := below.Manifests[0]
	for range depth {
		idx := v1.IndexManifest{SchemaVersion: 2, MediaType: types.OCIImageIndex}
		for range width {
			idx.Manifests = append(idx.Manifests, child)
		}
		raw, err := json.Marshal(idx)
		if err != nil {
			t.Fatal(err)
		}
		h, _, _ := v1.SHA256(bytes.NewReader(raw))
		entries = append(entries, testEntry{name: "blobs/sha256/" + h.Hex, body: raw})
		child = v1.Descriptor{MediaType: types.OCIImageIndex, Digest: h, Size: int64(len(raw))}
	}
	top, err := json.Marshal(v1.IndexManifest{SchemaVersion: 2, Manifests: []v1.Descriptor{child}})
	if err != nil {
		t.Fatal(err)
	}
	return makeTar(t, append(entries, testEntry{name: IndexFile, body: top})...)
}

// FuzzRead feeds arbitrary bytes to the archive reader: it must
// return an error or a consistent archive, never panic or hang.
func FuzzRead(f *testing.F) {
	valid := validEntries(f)
	f.Add(makeTar(f, valid...))
	f.Add(makeTar(f, valid[0], valid[1]))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		if err := readAndWalk(b); err != nil {
			if !errors.Is(err, ErrInvalid) && !errors.Is(err, ErrDigestMismatch) && !errors.Is(err, graph.ErrUnsupportedMediaType) {
				t.Errorf("reading returned an error of no documented kind: %v", err)
			}
		}
	})
}
