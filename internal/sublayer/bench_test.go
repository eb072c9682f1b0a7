package sublayer

import (
	"bytes"
	"io"
	"testing"
	"time"
)

// benchPair returns a base tar and a rebuilt tar of it.
func benchPair(b *testing.B) (base, final []byte) {
	files := realFiles(b, testTarSize)
	mt := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	return buildTar(b, layerSpec{files: files, mtime: mt}), buildTar(b, layerSpec{files: rebuildFiles(files), mtime: mt.Add(time.Hour)})
}

// BenchmarkEncode measures delta encoding of uncompressed tars; bytes/s
// are of the final tar.
func BenchmarkEncode(b *testing.B) {
	baseTar, final := benchPair(b)
	base := newBase(b, baseTar)
	b.SetBytes(int64(len(final)))
	b.ResetTimer()
	for b.Loop() {
		if _, err := Encode(b.Context(), base, Header{Recipe: Recipe{Encoder: EncoderNone}}, bytes.NewReader(final), io.Discard); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkApply measures rebuilding the tar from a delta.
func BenchmarkApply(b *testing.B) {
	baseTar, final := benchPair(b)
	base := newBase(b, baseTar)
	var delta bytes.Buffer
	if _, err := Encode(b.Context(), base, Header{Recipe: Recipe{Encoder: EncoderNone}}, bytes.NewReader(final), &delta); err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(final)))
	b.ResetTimer()
	for b.Loop() {
		if _, err := Apply(b.Context(), base, bytes.NewReader(delta.Bytes()), io.Discard); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkRebuild measures the whole push-side rebuild per producer:
// apply, recompress, hash. bytes/s are of the uncompressed tar.
func BenchmarkRebuild(b *testing.B) {
	baseTar, final := benchPair(b)
	for _, p := range producers {
		b.Run(p.name, func(b *testing.B) {
			blob := compressWith(b, p, final)
			baseBlob := compressWith(b, p, baseTar)
			var delta bytes.Buffer
			if _, err := Prepare(b.Context(), newBase(b, baseBlob), bytes.NewReader(blob), int64(len(blob)), digestOf(blob), &delta); err != nil {
				b.Fatal(err)
			}
			base := newBase(b, baseBlob)
			b.SetBytes(int64(len(final)))
			b.ResetTimer()
			for b.Loop() {
				if _, err := Rebuild(b.Context(), base, bytes.NewReader(delta.Bytes()), io.Discard); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
