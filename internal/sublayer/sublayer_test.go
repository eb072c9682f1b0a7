package sublayer

import (
	"bytes"
	"compress/flate"
	"compress/gzip"
	"compress/zlib"
	"context"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"io"
	"testing"
	"time"
)

// testTarSize is more than the last probe stage, so that the probe runs.
var testTarSize = 5 << 20

// TestRoundTrip builds a base layer and a rebuilt layer (new mtimes, some
// files changed, added and removed) and checks, for each producer, that
// the recipe is found, the delta is small, and Rebuild gives back the blob
// with its sha256.
func TestRoundTrip(t *testing.T) {
	files := realFiles(t, testTarSize)
	t1 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	v1tar := buildTar(t, layerSpec{files: files, mtime: t1, extras: true})
	v2tar := buildTar(t, layerSpec{files: rebuildFiles(files), mtime: t1.Add(time.Hour), extras: true, pad: 10240})

	for _, p := range producers {
		t.Run(p.name, func(t *testing.T) {
			if raceEnabled && (p.name == "go-gzip-9" || p.name == "go-gzip-3" || p.name == "zstd-default-readfrom") {
				t.Skip("skipped under the race detector to keep the run short; the run without it covers this producer")
			}
			baseBlob := compressWith(t, p, v1tar)
			blob := compressWith(t, p, v2tar)
			digest := digestOf(blob)

			pull := newBase(t, baseBlob)
			var delta bytes.Buffer
			st, err := Prepare(t.Context(), pull, bytes.NewReader(blob), int64(len(blob)), digest, &delta)
			if err != nil {
				t.Fatalf("Prepare() = %v", err)
			}
			if r := st.Header.Recipe; r.Encoder != p.encoder || r.Level != p.level {
				t.Errorf("recipe = %v, want %s level %d", &r, p.encoder, p.level)
			}
			ratio := float64(delta.Len()) / float64(len(blob))
			t.Logf("%s: blob %d, delta %d (%.2f%%); files %d: %d referenced, %d patched (%d -> %d), %d literal (%d bytes); raw %d",
				p.name, len(blob), delta.Len(), 100*ratio, st.Files, st.Referenced, st.Patched, st.PatchedBytes, st.PatchBytes, st.Literal, st.LiteralBytes, st.RawBytes)
			if int64(delta.Len()) != st.DeltaSize {
				t.Errorf("Stats.DeltaSize = %d, wrote %d", st.DeltaSize, delta.Len())
			}
			if ratio > 0.05 {
				t.Errorf("delta is %.2f%% of the blob, want at most 5%%", 100*ratio)
			}
			if st.Patched == 0 {
				t.Errorf("no file was patched")
			}

			h, err := ReadHeader(bytes.NewReader(delta.Bytes()))
			if err != nil {
				t.Fatalf("ReadHeader() = %v", err)
			}
			if h.Digest != digest || len(h.Bases) != 1 || h.Bases[0] != sha(baseBlob) {
				t.Errorf("ReadHeader() = digest %s bases %v, want %s [%s]", h.Digest, h.Bases, digest, sha(baseBlob))
			}

			push := newBase(t, baseBlob)
			var out bytes.Buffer
			if _, err := Rebuild(t.Context(), push, bytes.NewReader(delta.Bytes()), &out); err != nil {
				t.Fatalf("Rebuild() = %v", err)
			}
			if got, want := sha(out.Bytes()), digest.String(); got != want {
				t.Errorf("Rebuild() wrote %s, want %s", got, want)
			}
			if push.Spooled() <= 0 || push.Spooled() > int64(len(v1tar)) {
				t.Errorf("Spooled() = %d, want in (0, %d]", push.Spooled(), len(v1tar))
			}
		})
	}
}

// TestTarRoundTrip checks that Encode and Apply rebuild tars byte for byte,
// whatever their padding, trailer and oddities.
func TestTarRoundTrip(t *testing.T) {
	files := []testFile{
		{"a/one.txt", goldenInput(5000, 1)},
		{"a/two.bin", goldenInput(70000, 2)},
		{"b/three.txt", goldenInput(600, 3)},
	}
	mt := time.Date(2025, 5, 6, 7, 8, 9, 0, time.UTC)
	base := buildTar(t, layerSpec{files: files, mtime: mt})
	changed := append([]testFile(nil), files...)
	changed[1] = testFile{"a/two.bin", append(bytes.Clone(files[1].data[:30000]), files[1].data[30010:]...)}
	for _, tc := range []struct {
		name  string
		tar   []byte
		empty bool // no base contents used
	}{
		{"plain", buildTar(t, layerSpec{files: files, mtime: mt.Add(time.Minute)}), false},
		{"extras", buildTar(t, layerSpec{files: changed, mtime: mt, extras: true}), false},
		{"padded to 10240", buildTar(t, layerSpec{files: files, mtime: mt, pad: 10240}), false},
		{"garbage after trailer", buildTar(t, layerSpec{files: files, mtime: mt, garbage: []byte("trailing junk that is not a tar")}), false},
		{"truncated trailer", buildTar(t, layerSpec{files: files, mtime: mt})[:len(base)-700], false},
		{"empty", nil, true},
		{"not a tar", goldenInput(10000, 9), true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := newBase(t, base)
			var delta bytes.Buffer
			st, err := Encode(t.Context(), b, Header{Recipe: Recipe{Encoder: EncoderNone}}, bytes.NewReader(tc.tar), &delta)
			if err != nil {
				t.Fatalf("Encode() = %v", err)
			}
			if tc.empty != (len(st.Header.Bases) == 0) {
				t.Errorf("Encode() bases = %v", st.Header.Bases)
			}
			var out bytes.Buffer
			h, err := Apply(t.Context(), b, &delta, &out)
			if err != nil {
				t.Fatalf("Apply() = %v", err)
			}
			if !bytes.Equal(out.Bytes(), tc.tar) {
				t.Errorf("Apply() wrote %d bytes (%s), want %d (%s)", out.Len(), sha(out.Bytes()), len(tc.tar), sha(tc.tar))
			}
			if h.TarSize != int64(len(tc.tar)) || h.DiffID.String() != sha(tc.tar) {
				t.Errorf("header tar %s (%d), want %s (%d)", h.DiffID, h.TarSize, sha(tc.tar), len(tc.tar))
			}
		})
	}
}

// rawGzip wraps a deflate body in a gzip member with the given header.
func rawGzip(t *testing.T, header []byte, data []byte, level int) []byte {
	t.Helper()
	var buf bytes.Buffer
	buf.Write(header)
	fw, err := flate.NewWriter(&buf, level)
	if err != nil {
		t.Fatal(err)
	}
	fw.Write(data)
	fw.Close()
	binary.Write(&buf, binary.LittleEndian, crc32.ChecksumIEEE(data))
	binary.Write(&buf, binary.LittleEndian, uint32(len(data)))
	return buf.Bytes()
}

func TestDetectUnsupported(t *testing.T) {
	files := realFiles(t, testTarSize)[:20]
	tarball := buildTar(t, layerSpec{files: files, mtime: time.Unix(1e9, 0)})

	named := func() []byte {
		var buf bytes.Buffer
		zw, _ := gzip.NewWriterLevel(&buf, 6)
		zw.Name, zw.OS = "layer.tar", 3
		zw.ModTime = time.Unix(1700000000, 0)
		zw.Write(tarball)
		zw.Close()
		return buf.Bytes()
	}()
	zl := func() []byte {
		var buf bytes.Buffer
		zw := zlib.NewWriter(&buf)
		zw.Write(tarball)
		zw.Close()
		return buf.Bytes()
	}()
	for _, tc := range []struct {
		name string
		blob []byte
	}{
		{"gzip with name, mtime and OS 3", named},
		{"zlib stream", zl},
		// A klauspost header on a body from another deflate encoder.
		{"foreign body with klauspost header", rawGzip(t, []byte{0x1f, 0x8b, 8, 0, 0x00, 0x09, 0x6e, 0x88, 0, 255}, tarball, flate.HuffmanOnly)},
		// A Go header on a body at a level whose XFL says otherwise.
		{"Go header, wrong level", rawGzip(t, []byte{0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 4, 255}, tarball, 6)},
		{"random bytes", goldenInput(100000, 5)},
		{"empty", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := DetectRecipe(t.Context(), bytes.NewReader(tc.blob), int64(len(tc.blob)), digestOf(tc.blob))
			if !errors.Is(err, ErrUnsupportedEncoder) {
				t.Errorf("DetectRecipe() = %v, want ErrUnsupportedEncoder", err)
			}
			b := newBase(t, tarball) // a small delta: only the recipe can fail
			_, err = Prepare(t.Context(), b, bytes.NewReader(tc.blob), int64(len(tc.blob)), digestOf(tc.blob), io.Discard)
			if !errors.Is(err, ErrUnsupportedEncoder) {
				t.Errorf("Prepare() = %v, want ErrUnsupportedEncoder", err)
			}
		})
	}
}

func TestPrepareNotWorthwhile(t *testing.T) {
	files := realFiles(t, testTarSize)[:30]
	blob := compressWith(t, producers[0], buildTar(t, layerSpec{files: files, mtime: time.Unix(1e9, 0)}))
	b := newBase(t) // an empty base: everything is literal
	var out bytes.Buffer
	_, err := Prepare(t.Context(), b, bytes.NewReader(blob), int64(len(blob)), digestOf(blob), &out)
	if !errors.Is(err, ErrNotWorthwhile) {
		t.Errorf("Prepare() = %v, want ErrNotWorthwhile", err)
	}
	if out.Len() != 0 {
		t.Errorf("Prepare() wrote %d bytes after refusing", out.Len())
	}
}

func TestRebuildRefusals(t *testing.T) {
	files := realFiles(t, testTarSize)[:40]
	mt := time.Unix(1.5e9, 0)
	l1 := compressWith(t, producers[1], buildTar(t, layerSpec{files: files[:20], mtime: mt}))
	l2 := compressWith(t, producers[1], buildTar(t, layerSpec{files: files[20:], mtime: mt}))
	final := compressWith(t, producers[1], buildTar(t, layerSpec{files: rebuildFiles(files), mtime: mt.Add(time.Hour)}))
	var delta bytes.Buffer
	if _, err := Prepare(t.Context(), newBase(t, l1, l2), bytes.NewReader(final), int64(len(final)), digestOf(final), &delta); err != nil {
		t.Fatalf("Prepare() = %v", err)
	}
	h, err := ReadHeader(bytes.NewReader(delta.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	if len(h.Bases) != 2 || h.Bases[0] != sha(l1) || h.Bases[1] != sha(l2) {
		t.Errorf("Bases = %v, want both base layers in order", h.Bases)
	}

	// With the wrong encoder version recorded.
	var old bytes.Buffer
	h2 := *h
	h2.Recipe.Version = "go1.27.0"
	if _, err := writeHeader(&old, &h2); err != nil {
		t.Fatal(err)
	}
	body := delta.Bytes()[len(magic):]
	hl, n := binary.Uvarint(body)
	old.Write(body[n+int(hl):])

	for _, tc := range []struct {
		name  string
		base  *Base
		delta []byte
		want  error
	}{
		{"ok", newBase(t, l1, l2), delta.Bytes(), nil},
		{"missing base layer", newBase(t, l1), delta.Bytes(), ErrMissingBase},
		{"encoder version differs", newBase(t, l1, l2), old.Bytes(), ErrEncoderMismatch},
		{"truncated", newBase(t, l1, l2), delta.Bytes()[:delta.Len()-10], ErrFormat},
		{"not a delta", newBase(t, l1, l2), final, ErrFormat},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out bytes.Buffer
			_, err := Rebuild(t.Context(), tc.base, bytes.NewReader(tc.delta), &out)
			if !errors.Is(err, tc.want) {
				t.Fatalf("Rebuild() = %v, want %v", err, tc.want)
			}
			if tc.want == nil && !bytes.Equal(out.Bytes(), final) {
				t.Errorf("Rebuild() wrote %s, want %s", sha(out.Bytes()), sha(final))
			}
		})
	}
}

func TestRecipeHeader(t *testing.T) {
	hdr := []byte{0x1f, 0x8b, 8, 0x08, 1, 2, 3, 4, 0, 3, 'x', '.', 't', 'a', 'r', 0}
	r := &Recipe{Encoder: EncoderGzip, Version: encoderVersion(EncoderGzip), Level: 6, Header: hdr}
	var buf bytes.Buffer
	zw, err := r.Compress(&buf)
	if err != nil {
		t.Fatal(err)
	}
	data := goldenInput(50000, 3)
	zw.Write(data)
	zw.Close()
	if !bytes.HasPrefix(buf.Bytes(), hdr) {
		t.Errorf("Compress() header = % x, want % x", buf.Bytes()[:len(hdr)], hdr)
	}
	zr, err := gzip.NewReader(&buf)
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(zr)
	if err != nil || !bytes.Equal(got, data) || zr.Name != "x.tar" {
		t.Errorf("decompressed %d bytes, name %q, err %v", len(got), zr.Name, err)
	}
}

func TestRecipeValid(t *testing.T) {
	for _, tc := range []struct {
		r    Recipe
		want error
	}{
		{Recipe{Encoder: EncoderGzip, Version: encoderVersion(EncoderGzip), Level: 6}, nil},
		{Recipe{Encoder: EncoderGzip, Version: "go1.26.0", Level: 6}, nil},
		{Recipe{Encoder: EncoderGzip, Version: "go1.27.1", Level: 6}, ErrEncoderMismatch},
		{Recipe{Encoder: EncoderZstd, Version: "v1.20.3", Level: 2}, ErrEncoderMismatch},
		{Recipe{Encoder: EncoderPgzip, Version: encoderVersion(EncoderPgzip), Level: 5, BlockSize: 1 << 19}, ErrUnsupportedEncoder},
		{Recipe{Encoder: "pigz", Level: 6}, ErrUnsupportedEncoder},
		{Recipe{Encoder: EncoderGzip, Version: encoderVersion(EncoderGzip), Level: 6, Header: []byte{1, 2, 3}}, ErrUnsupportedEncoder},
		{Recipe{Encoder: EncoderKlauspostGzip, Version: compressVersion, Level: 0}, ErrUnsupportedEncoder},
	} {
		t.Run(tc.r.String(), func(t *testing.T) {
			if err := tc.r.compatible(); !errors.Is(err, tc.want) {
				t.Errorf("compatible() = %v, want %v", err, tc.want)
			}
		})
	}
}

// TestCanceled checks that a canceled context stops every long operation
// with its error; TestMain checks that no goroutine is left behind.
func TestCanceled(t *testing.T) {
	files := realFiles(t, testTarSize)
	files = files[:min(len(files), 60)]
	mt := time.Unix(1e9, 0)
	v1tar := buildTar(t, layerSpec{files: files, mtime: mt})
	v2tar := buildTar(t, layerSpec{files: rebuildFiles(files), mtime: mt.Add(time.Hour)})
	for _, p := range []producer{producers[5], producers[1]} { // pgzip runs goroutines
		t.Run(p.name, func(t *testing.T) {
			baseBlob := compressWith(t, p, v1tar)
			blob := compressWith(t, p, v2tar)
			var delta bytes.Buffer
			if _, err := Prepare(t.Context(), newBase(t, baseBlob), bytes.NewReader(blob), int64(len(blob)), digestOf(blob), &delta); err != nil {
				t.Fatal(err)
			}
			ctx, cancel := contextWithCancel(t)
			cancel()
			if _, err := DetectRecipe(ctx, bytes.NewReader(blob), int64(len(blob)), digestOf(blob)); !errors.Is(err, context.Canceled) {
				t.Errorf("DetectRecipe(canceled) = %v", err)
			}
			if _, err := Prepare(ctx, newBase(t, baseBlob), bytes.NewReader(blob), int64(len(blob)), digestOf(blob), io.Discard); !errors.Is(err, context.Canceled) {
				t.Errorf("Prepare(canceled) = %v", err)
			}
			if _, err := Rebuild(ctx, newBase(t, baseBlob), bytes.NewReader(delta.Bytes()), io.Discard); !errors.Is(err, context.Canceled) {
				t.Errorf("Rebuild(canceled) = %v", err)
			}
		})
	}
}

// TestDetectRecipeLevels checks detection at every level of every encoder
// family on a layer larger than the first probe stage.
func TestDetectRecipeLevels(t *testing.T) {
	if raceEnabled {
		t.Skip("too slow under the race detector; TestRoundTrip covers the common levels")
	}
	var files []testFile
	sum := 0
	for _, f := range realFiles(t, testTarSize) {
		if sum > 700<<10 {
			break
		}
		files = append(files, f)
		sum += len(f.data)
	}
	tarball := buildTar(t, layerSpec{files: files, mtime: time.Unix(1e9, 0)})
	var recipes []Recipe
	for l := 1; l <= 9; l++ {
		recipes = append(recipes,
			Recipe{Encoder: EncoderGzip, Version: encoderVersion(EncoderGzip), Level: l},
			Recipe{Encoder: EncoderKlauspostGzip, Version: encoderVersion(EncoderKlauspostGzip), Level: l},
			Recipe{Encoder: EncoderPgzip, Version: encoderVersion(EncoderPgzip), Level: l, BlockSize: PgzipBlockSize})
	}
	for l := 1; l <= 4; l++ {
		recipes = append(recipes, Recipe{Encoder: EncoderZstd, Version: encoderVersion(EncoderZstd), Level: l})
	}
	for _, r := range recipes {
		t.Run(r.String(), func(t *testing.T) {
			var buf bytes.Buffer
			zw, err := r.Compress(&buf)
			if err != nil {
				t.Fatal(err)
			}
			zw.Write(tarball)
			zw.Close()
			got, err := DetectRecipe(t.Context(), bytes.NewReader(buf.Bytes()), int64(buf.Len()), digestOf(buf.Bytes()))
			if err != nil {
				t.Fatalf("DetectRecipe() = %v", err)
			}
			// Levels whose output is identical are interchangeable; what
			// matters is that the recipe reproduces the blob.
			var again bytes.Buffer
			zw, _ = got.Compress(&again)
			zw.Write(tarball)
			zw.Close()
			if !bytes.Equal(again.Bytes(), buf.Bytes()) {
				t.Errorf("DetectRecipe() = %v, which does not reproduce the blob", got)
			}
			if got.Level != r.Level {
				t.Logf("detected %v for %v (same output)", got, &r)
			}
			if got.Encoder != r.Encoder {
				t.Errorf("DetectRecipe() = %v, want encoder %s", got, r.Encoder)
			}
		})
	}
}

// TestPrepareLaterCandidate checks that Prepare goes on to the next
// candidate when the first does not reproduce the blob: on a layer smaller
// than one pgzip block, pgzip and klauspost gzip both survive the probe
// and pgzip is tried first.
func TestPrepareLaterCandidate(t *testing.T) {
	var files []testFile
	sum := 0
	for _, f := range realFiles(t, testTarSize) {
		if sum > 400<<10 {
			break
		}
		files = append(files, f)
		sum += len(f.data)
	}
	mt := time.Unix(1e9, 0)
	p := producers[4] // klauspost gzip
	baseBlob := compressWith(t, p, buildTar(t, layerSpec{files: files, mtime: mt}))
	blob := compressWith(t, p, buildTar(t, layerSpec{files: rebuildFiles(files), mtime: mt.Add(time.Hour)}))
	cands, err := recipeCandidates(t.Context(), bytes.NewReader(blob), int64(len(blob)))
	if err != nil {
		t.Fatal(err)
	}
	if len(cands) < 2 || cands[0].Encoder != EncoderPgzip {
		t.Fatalf("candidates = %v, want pgzip first and more after it", cands)
	}
	var delta bytes.Buffer
	st, err := Prepare(t.Context(), newBase(t, baseBlob), bytes.NewReader(blob), int64(len(blob)), digestOf(blob), &delta)
	if err != nil {
		t.Fatalf("Prepare() = %v", err)
	}
	if r := st.Header.Recipe; r.Encoder != EncoderKlauspostGzip || r.Level != 5 {
		t.Errorf("Prepare() recipe = %v, want klauspost-gzip level 5", &r)
	}
	var out bytes.Buffer
	if _, err := Rebuild(t.Context(), newBase(t, baseBlob), &delta, &out); err != nil || !bytes.Equal(out.Bytes(), blob) {
		t.Errorf("Rebuild() = %v, same blob %v", err, bytes.Equal(out.Bytes(), blob))
	}
}
