package sublayer

import (
	"bytes"
	"context"
	"errors"
	"io"
	"testing"
	"time"
)

func TestBaseAddLayer(t *testing.T) {
	files := []testFile{
		{"a/one.txt", goldenInput(4000, 1)},
		{"a/dup.txt", goldenInput(4000, 1)}, // same content: spooled once
		{"b/two.txt", goldenInput(2000, 2)},
	}
	tarball := buildTar(t, layerSpec{files: files, mtime: time.Unix(1e9, 0)})
	gz := compressWith(t, producers[1], tarball)
	zst := compressWith(t, producers[6], tarball)
	for _, tc := range []struct {
		name    string
		blob    []byte
		id      string
		want    error
		spooled int64
	}{
		{"tar", tarball, sha(tarball), nil, 6000},
		{"gzip", gz, sha(gz), nil, 6000},
		{"zstd", zst, sha(zst), nil, 6000},
		{"id that is not a digest", gz, "layer-1", nil, 6000},
		{"wrong digest", gz, sha(zst), ErrDigestMismatch, -1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := newBase(t)
			err := b.AddLayer(t.Context(), bytes.NewReader(tc.blob), tc.id)
			if !errors.Is(err, tc.want) {
				t.Fatalf("AddLayer() = %v, want %v", err, tc.want)
			}
			if b.HasLayer(tc.id) != (tc.want == nil) {
				t.Errorf("HasLayer() = %v after AddLayer() = %v", b.HasLayer(tc.id), err)
			}
			if tc.want != nil {
				if _, ok := b.lookup(sha256Of(files[2].data)); ok {
					t.Errorf("content of a failed layer is still indexed")
				}
				return
			}
			if got := b.Spooled(); got != tc.spooled {
				t.Errorf("Spooled() = %d, want %d", got, tc.spooled)
			}
			s, ok := b.lookup(sha256Of(files[2].data))
			if !ok {
				t.Fatalf("content of b/two.txt not indexed")
			}
			got, _ := io.ReadAll(b.reader(s))
			if !bytes.Equal(got, files[2].data) {
				t.Errorf("spooled content differs")
			}
			if _, _, ok := b.atPath("a/dup.txt"); !ok {
				t.Errorf("path a/dup.txt not indexed")
			}
		})
	}
}

func TestBaseCanceled(t *testing.T) {
	tarball := buildTar(t, layerSpec{files: []testFile{{"f", []byte("data")}}, mtime: time.Unix(1e9, 0)})
	b := newBase(t)
	ctx, cancel := contextWithCancel(t)
	cancel()
	if err := b.AddLayer(ctx, bytes.NewReader(tarball), sha(tarball)); !errors.Is(err, context.Canceled) {
		t.Errorf("AddLayer(canceled) = %v", err)
	}
}

// TestLargeContent exercises contents staged in scratch files.
func TestLargeContent(t *testing.T) {
	old := inMemory
	inMemory = 1000
	defer func() { inMemory = old }()
	files := []testFile{{"big/one", goldenInput(50000, 1)}, {"big/two", goldenInput(30000, 2)}}
	base := buildTar(t, layerSpec{files: files, mtime: time.Unix(1e9, 0)})
	final := buildTar(t, layerSpec{files: append(files, testFile{"big/three", goldenInput(40000, 3)}), mtime: time.Unix(2e9, 0)})
	b := newBase(t, base)
	var delta bytes.Buffer
	st, err := Encode(t.Context(), b, Header{Recipe: Recipe{Encoder: EncoderNone}}, bytes.NewReader(final), &delta)
	if err != nil {
		t.Fatalf("Encode() = %v", err)
	}
	if st.Referenced != 2 || st.Literal != 1 {
		t.Errorf("Encode() referenced %d, literal %d; want 2, 1", st.Referenced, st.Literal)
	}
	var out bytes.Buffer
	if _, err := Apply(t.Context(), b, &delta, &out); err != nil {
		t.Fatalf("Apply() = %v", err)
	}
	if !bytes.Equal(out.Bytes(), final) {
		t.Errorf("Apply() output differs")
	}
}
