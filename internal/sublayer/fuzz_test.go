package sublayer

import (
	"bytes"
	"context"
	"io"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"
)

// fuzzBase returns a small base and a valid delta against it.
func fuzzBase(f testing.TB) (*Base, []byte, []byte) {
	files := []testFile{
		{"a/one.txt", goldenInput(3000, 1)},
		{"a/two.bin", goldenInput(9000, 2)},
	}
	mt := time.Unix(1e9, 0)
	baseTar := buildTar(f, layerSpec{files: files, mtime: mt})
	b, err := NewBase(f.TempDir())
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { b.Close() })
	if err := b.AddLayer(context.Background(), bytes.NewReader(baseTar), sha(baseTar)); err != nil {
		f.Fatal(err)
	}
	changed := []testFile{files[0], {"a/two.bin", append(bytes.Clone(files[1].data[:4000]), files[1].data[4100:]...)}, {"new", []byte("new file")}}
	final := buildTar(f, layerSpec{files: changed, mtime: mt.Add(time.Hour), extras: true})
	var delta bytes.Buffer
	if _, err := Encode(context.Background(), b, Header{Recipe: Recipe{Encoder: EncoderNone}}, bytes.NewReader(final), &delta); err != nil {
		f.Fatal(err)
	}
	return b, delta.Bytes(), final
}

// FuzzApply feeds hostile deltas to Apply, which must fail cleanly and
// never allocate more than the sizes it caps.
func FuzzApply(f *testing.F) {
	b, delta, _ := fuzzBase(f)
	f.Add(delta)
	f.Add(delta[:len(delta)/2])
	f.Add([]byte(magic))
	f.Add(append([]byte(magic), 0xff, 0xff, 0xff, 0xff, 0x0f))
	f.Fuzz(func(t *testing.T, data []byte) {
		_, _ = Apply(context.Background(), b, bytes.NewReader(data), io.Discard)
	})
}

// FuzzEncode checks that any input, tar or not, comes back byte for byte
// through Encode and Apply.
func FuzzEncode(f *testing.F) {
	b, _, final := fuzzBase(f)
	f.Add(final)
	f.Add(final[:1500])
	f.Add([]byte("not a tar"))
	f.Fuzz(func(t *testing.T, data []byte) {
		var delta bytes.Buffer
		if _, err := Encode(context.Background(), b, Header{Recipe: Recipe{Encoder: EncoderNone}}, bytes.NewReader(data), &delta); err != nil {
			return // a regular file cut short is an error
		}
		var out bytes.Buffer
		if _, err := Apply(context.Background(), b, &delta, &out); err != nil {
			t.Fatalf("Apply() = %v", err)
		}
		if !bytes.Equal(out.Bytes(), data) {
			t.Fatalf("Apply() wrote %d bytes that differ from the %d encoded", out.Len(), len(data))
		}
	})
}

// FuzzApplyOps feeds hostile operation streams, compressed as a valid
// delta body, to Apply.
func FuzzApplyOps(f *testing.F) {
	b, delta, _ := fuzzBase(f)
	h, err := ReadHeader(bytes.NewReader(delta))
	if err != nil {
		f.Fatal(err)
	}
	var head bytes.Buffer
	if _, err := writeHeader(&head, h); err != nil {
		f.Fatal(err)
	}
	zr, err := zstd.NewReader(bytes.NewReader(delta[head.Len():]))
	if err != nil {
		f.Fatal(err)
	}
	ops, err := io.ReadAll(zr)
	zr.Close()
	if err != nil {
		f.Fatal(err)
	}
	zw, err := zstd.NewWriter(nil)
	if err != nil {
		f.Fatal(err)
	}
	defer zw.Close()
	f.Add(ops)
	f.Add([]byte{opRaw, 0xff, 0xff, 0xff, 0xff, 0x7f})
	f.Add(append(append([]byte{opPatch}, make([]byte, 32)...), 0x80, 0x80, 0x80, 0x20, 0x80, 0x80, 0x80, 0x20))
	f.Fuzz(func(t *testing.T, ops []byte) {
		in := append(bytes.Clone(head.Bytes()), zw.EncodeAll(ops, nil)...)
		_, _ = Apply(context.Background(), b, bytes.NewReader(in), io.Discard)
	})
}

// FuzzDetectRecipe feeds hostile blobs to DetectRecipe, which must fail
// cleanly.
func FuzzDetectRecipe(f *testing.F) {
	_, _, final := fuzzBase(f)
	for _, p := range []producer{producers[0], producers[4], producers[6]} {
		f.Add(compressWith(f, p, final))
	}
	f.Add([]byte{0x1f, 0x8b, 8, 0x1c, 0, 0, 0, 0, 0, 255, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, blob []byte) {
		_, _ = DetectRecipe(context.Background(), bytes.NewReader(blob), int64(len(blob)), digestOf(blob))
	})
}
