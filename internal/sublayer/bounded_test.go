package sublayer

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"runtime"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"
)

// withSmallPatches makes patch segments and dictionaries small, so that
// small test files take the paths that large files take.
func withSmallPatches(t *testing.T, seg, dict int, mem int64) {
	t.Helper()
	oldSeg, oldDict, oldMem := patchSeg, patchDict, inMemory
	patchSeg, patchDict, inMemory = seg, dict, mem
	t.Cleanup(func() { patchSeg, patchDict, inMemory = oldSeg, oldDict, oldMem })
}

// changedLarge returns base files of a few segments each and a rebuilt
// version: bytes flipped here and there, one file grown in its middle.
func changedLarge() (base, final []testFile) {
	for i := 0; i < 4; i++ {
		base = append(base, testFile{fmt.Sprintf("lib/big%d.so", i), goldenInput(150000+i*7000, uint64(40+i))})
	}
	for i, f := range base {
		d := bytes.Clone(f.data)
		switch i {
		case 0: // unchanged
		case 1: // a byte flipped every 20000
			for k := 1000; k < len(d); k += 20000 {
				d[k] ^= 0x5a
			}
		case 2: // the start changed: no common prefix with the base
			d[3] ^= 1
		case 3: // 5000 bytes inserted in the middle
			d = append(append(bytes.Clone(d[:len(d)/2]), goldenInput(5000, 99)...), d[len(d)/2:]...)
		}
		final = append(final, testFile{f.name, d})
	}
	return base, final
}

func TestRangePatches(t *testing.T) {
	withSmallPatches(t, 16<<10, 48<<10, 20000)
	baseFiles, finalFiles := changedLarge()
	mt := time.Unix(1.6e9, 0)
	baseTar := buildTar(t, layerSpec{files: baseFiles, mtime: mt})
	final := buildTar(t, layerSpec{files: finalFiles, mtime: mt.Add(time.Hour)})
	b := newBase(t, baseTar)
	var delta bytes.Buffer
	st, err := Encode(t.Context(), b, Header{Recipe: Recipe{Encoder: EncoderNone}}, bytes.NewReader(final), &delta)
	if err != nil {
		t.Fatalf("Encode() = %v", err)
	}
	t.Logf("delta %d bytes for a %d-byte tar: %d referenced, %d patched (%d -> %d), %d literal (%d bytes)",
		delta.Len(), len(final), st.Referenced, st.Patched, st.PatchedBytes, st.PatchBytes, st.Literal, st.LiteralBytes)
	if !bytes.HasPrefix(delta.Bytes(), []byte(magicV2)) {
		t.Errorf("a delta with range patches does not start with the version 2 magic")
	}
	if st.Referenced != 1 || st.Patched != 3 {
		t.Errorf("Encode() referenced %d, patched %d; want 1, 3", st.Referenced, st.Patched)
	}
	if delta.Len() > len(final)/20 {
		t.Errorf("delta of %d bytes for a %d-byte tar", delta.Len(), len(final))
	}
	var out bytes.Buffer
	h, err := Apply(t.Context(), b, bytes.NewReader(delta.Bytes()), &out)
	if err != nil {
		t.Fatalf("Apply() = %v", err)
	}
	if !bytes.Equal(out.Bytes(), final) || h.version != 2 {
		t.Errorf("Apply() wrote %d bytes that differ (version %d)", out.Len(), h.version)
	}

	// The same body under a version 1 magic is refused: version 1 has no
	// range patches.
	v1delta := append([]byte(magic), delta.Bytes()[len(magicV2):]...)
	if _, err := Apply(t.Context(), b, bytes.NewReader(v1delta), io.Discard); !errors.Is(err, ErrFormat) {
		t.Errorf("Apply(version 1 with range patches) = %v, want ErrFormat", err)
	}
}

// TestSmallFilesStayVersion1 checks that deltas whose patches all fit in
// one segment keep the version 1 format that older builds read.
func TestSmallFilesStayVersion1(t *testing.T) {
	files := realFiles(t, testTarSize)[:40]
	mt := time.Unix(1.6e9, 0)
	b := newBase(t, buildTar(t, layerSpec{files: files, mtime: mt}))
	var delta bytes.Buffer
	st, err := Encode(t.Context(), b, Header{Recipe: Recipe{Encoder: EncoderNone}}, bytes.NewReader(buildTar(t, layerSpec{files: rebuildFiles(files), mtime: mt.Add(time.Hour)})), &delta)
	if err != nil {
		t.Fatal(err)
	}
	if st.Patched == 0 || !bytes.HasPrefix(delta.Bytes(), []byte(magic)) {
		t.Errorf("patched %d, magic %q: want patches in a version 1 delta", st.Patched, delta.Bytes()[:len(magic)])
	}
}

// TestRangePatchesRoundTrip runs the whole round trip, proof included,
// with range patches.
func TestRangePatchesRoundTrip(t *testing.T) {
	withSmallPatches(t, 16<<10, 48<<10, 20000)
	baseFiles, finalFiles := changedLarge()
	files := append(realFiles(t, testTarSize)[:30], baseFiles...)
	mt := time.Unix(1.6e9, 0)
	for _, p := range []producer{producers[1], producers[6]} {
		t.Run(p.name, func(t *testing.T) {
			baseBlob := compressWith(t, p, buildTar(t, layerSpec{files: files, mtime: mt}))
			blob := compressWith(t, p, buildTar(t, layerSpec{files: append(rebuildFiles(files[:30]), finalFiles...), mtime: mt.Add(time.Hour)}))
			var delta bytes.Buffer
			st, err := Prepare(t.Context(), newBase(t, baseBlob), bytes.NewReader(blob), int64(len(blob)), digestOf(blob), &delta)
			if err != nil {
				t.Fatalf("Prepare() = %v", err)
			}
			if st.DeltaSize != int64(delta.Len()) || !bytes.HasPrefix(delta.Bytes(), []byte(magicV2)) {
				t.Errorf("Stats.DeltaSize = %d, wrote %d bytes starting %q", st.DeltaSize, delta.Len(), delta.Bytes()[:len(magicV2)])
			}
			var out bytes.Buffer
			if _, err := Rebuild(t.Context(), newBase(t, baseBlob), bytes.NewReader(delta.Bytes()), &out); err != nil || !bytes.Equal(out.Bytes(), blob) {
				t.Errorf("Rebuild() = %v, same blob %v", err, bytes.Equal(out.Bytes(), blob))
			}
		})
	}
}

// TestApplyRangeRefusals feeds range patches that lie about their
// dictionary to Apply.
func TestApplyRangeRefusals(t *testing.T) {
	data := goldenInput(5000, 3)
	b := newBase(t, buildTar(t, layerSpec{files: []testFile{{"f", data}}, mtime: time.Unix(1e9, 0)}))
	sum := sha256.Sum256(data)
	zw, _ := zstd.NewWriter(nil, zstd.WithEncoderDictRaw(dictID, data[100:1100]))
	patch := zw.EncodeAll(data[100:1100], nil)
	zw.Close()
	op := func(off, dlen, n uint64) []byte {
		o := append([]byte{opPatchRange}, sum[:]...)
		for _, v := range []uint64{off, dlen, n, uint64(len(patch))} {
			o = binary.AppendUvarint(o, v)
		}
		return append(append(o, patch...), opEnd)
	}
	for _, tc := range []struct {
		name string
		ops  []byte
		want error
	}{
		{"ok", op(100, 1000, 1000), nil},
		{"past the content", op(4500, 1000, 1000), ErrFormat},
		{"empty dictionary", op(0, 0, 1000), ErrFormat},
		{"dictionary too large", op(0, maxRangeDict+1, 1000), ErrFormat},
		{"output too large", op(0, 1000, maxRangeOut+1), ErrFormat},
		{"wrong output size", op(100, 1000, 999), ErrFormat},
		{"empty patch", func() []byte { // loads a dictionary, writes nothing: a crafted delta's way to keep a push busy
			o := append([]byte{opPatchRange}, sum[:]...)
			for _, v := range []uint64{100, 1000, 0, 0} {
				o = binary.AppendUvarint(o, v)
			}
			return append(o, opEnd)
		}(), ErrFormat},
	} {
		t.Run(tc.name, func(t *testing.T) {
			zw, _ := zstd.NewWriter(nil)
			body := zw.EncodeAll(tc.ops, nil)
			zw.Close()
			want := data[100:1100]
			h := Header{DiffID: digestOf(want), TarSize: int64(len(want)), Digest: digestOf(want), version: 2}
			var d bytes.Buffer
			writeHeader(&d, &h)
			d.Write(body)
			var out bytes.Buffer
			_, err := Apply(t.Context(), b, &d, &out)
			if !errors.Is(err, tc.want) || (tc.want == nil && !bytes.Equal(out.Bytes(), want)) {
				t.Errorf("Apply() = %v, want %v", err, tc.want)
			}
		})
	}
}

// TestBaseIndexRuns checks the index built from sorted runs against the
// one sorted in memory and against what the layers say.
func TestBaseIndexRuns(t *testing.T) {
	var l1, l2 []testFile
	for i := 0; i < 300; i++ {
		l1 = append(l1, testFile{fmt.Sprintf("a/%03d", i), goldenInput(200+i%7, uint64(i))})
	}
	for i := 0; i < 300; i += 3 {
		l2 = append(l2, testFile{fmt.Sprintf("a/%03d", i), goldenInput(300, uint64(1000+i))}) // paths replaced
	}
	l2 = append(l2, testFile{"a/.wh.001", []byte("x")}) // whiteout with content
	l2 = append(l2, testFile{"b/copy", l1[5].data})     // a content of the first layer again
	mt := time.Unix(1e9, 0)
	t1, t2 := buildTar(t, layerSpec{files: l1, mtime: mt}), buildTar(t, layerSpec{files: l2, mtime: mt})
	check := func(t *testing.T, b *Base) {
		for i := 0; i < 300; i++ {
			name := fmt.Sprintf("a/%03d", i)
			want, layer := sha256.Sum256(l1[i].data), 0
			if i%3 == 0 {
				want, layer = sha256.Sum256(l2[i/3].data), 1
			}
			sum, s, ok := b.atPath(name)
			switch {
			case i == 1:
				if ok {
					t.Errorf("atPath(%s) found a removed path", name)
				}
				continue
			case !ok || sum != want:
				t.Errorf("atPath(%s) = %x, %v; want %x", name, sum[:4], ok, want[:4])
				continue
			}
			if s.layer != layer {
				t.Errorf("atPath(%s) layer %d, want %d", name, s.layer, layer)
			}
			got, _ := io.ReadAll(b.reader(s))
			if !bytes.Equal(got, map[bool][]byte{true: l2[i/3].data, false: l1[i].data}[i%3 == 0]) {
				t.Errorf("content of %s differs", name)
			}
		}
		if _, ok := b.lookup(sha256.Sum256([]byte("absent"))); ok {
			t.Errorf("lookup(absent) found something")
		}
		if sum, s, ok := b.atPath("b/copy"); !ok || sum != sha256.Sum256(l1[5].data) || s.layer != 0 {
			t.Errorf("atPath(b/copy) = %x, layer %d, %v; want the first layer's content", sum[:4], s.layer, ok)
		}
	}
	t.Run("in memory", func(t *testing.T) { check(t, newBase(t, t1, t2)) })
	t.Run("runs", func(t *testing.T) {
		old := sortChunk
		sortChunk = 7
		defer func() { sortChunk = old }()
		b := newBase(t, t1, t2)
		check(t, b)
		if b.contents.n != 300+100+1 || b.paths.n != 300 {
			t.Errorf("tables hold %d contents and %d paths, want 401 and 300", b.contents.n, b.paths.n)
		}
	})
	t.Run("layer added after lookups", func(t *testing.T) {
		b := newBase(t, t1)
		if _, _, ok := b.atPath("a/000"); !ok {
			t.Fatal("a/000 not indexed")
		}
		if err := b.AddLayer(t.Context(), bytes.NewReader(t2), sha(t2)); err != nil {
			t.Fatal(err)
		}
		check(t, b)
	})
}

// TestChunkPipeStop checks that a pipe's writer fails once its reader
// stops, and that a reader sees every byte otherwise.
func TestChunkPipeStop(t *testing.T) {
	data := goldenInput(3<<20, 5)
	p := newChunkPipe()
	got := make(chan []byte)
	go func() {
		var all []byte
		for {
			c, ok := p.next()
			if !ok {
				break
			}
			all = append(all, c...)
			p.release(c)
		}
		got <- all
	}()
	go func() {
		p.Write(data[:1000])
		p.ReadFrom(bytes.NewReader(data[1000:]))
		p.closeWrite()
	}()
	if all := <-got; !bytes.Equal(all, data) {
		t.Errorf("read %d bytes that differ from the %d written", len(all), len(data))
	}

	p = newChunkPipe()
	p.stop()
	if _, err := p.Write(data); !errors.Is(err, errPipeClosed) {
		t.Errorf("Write() after stop = %v, want errPipeClosed", err)
	}
}

// TestPatchFollowsMovedContent checks that segments after an insertion
// larger than a dictionary's slack are still patched against the base
// bytes they moved away from.
func TestPatchFollowsMovedContent(t *testing.T) {
	withSmallPatches(t, 16<<10, 48<<10, 20000)
	old := goldenInput(400000, 61)
	noise := make([]byte, 60000)
	for i := range noise {
		noise[i] = byte(i*7919>>3) ^ byte(i>>11)
	}
	nu := append(append(bytes.Clone(old[:100000]), noise...), old[100000:]...)
	mt := time.Unix(1.6e9, 0)
	b := newBase(t, buildTar(t, layerSpec{files: []testFile{{"lib/moved.so", old}}, mtime: mt}))
	final := buildTar(t, layerSpec{files: []testFile{{"lib/moved.so", nu}}, mtime: mt})
	var delta bytes.Buffer
	st, err := Encode(t.Context(), b, Header{Recipe: Recipe{Encoder: EncoderNone}}, bytes.NewReader(final), &delta)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("delta %d: patched %d -> %d, literal %d", delta.Len(), st.PatchedBytes, st.PatchBytes, st.LiteralBytes)
	// Without following the shift, the delta has about 90000 bytes.
	if st.LiteralBytes > int64(len(noise))+2*16<<10 || delta.Len() > len(noise)+15000 {
		t.Errorf("delta of %d bytes, %d literal; want little more than the %d inserted", delta.Len(), st.LiteralBytes, len(noise))
	}
	var out bytes.Buffer
	if _, err := Apply(t.Context(), b, &delta, &out); err != nil || !bytes.Equal(out.Bytes(), final) {
		t.Errorf("Apply() = %v, same %v", err, bytes.Equal(out.Bytes(), final))
	}
}

// TestLargeBody checks a body of more operations than are staged before
// compression, compressed as they come with a smaller window.
func TestLargeBody(t *testing.T) {
	var files []testFile
	for i := 0; i < 12; i++ {
		files = append(files, testFile{fmt.Sprintf("new/%02d", i), goldenInput(800<<10, uint64(300+i))})
	}
	final := buildTar(t, layerSpec{files: files, mtime: time.Unix(1e9, 0)})
	if len(final) <= smallBody {
		t.Fatalf("tar of %d bytes, want more than %d", len(final), smallBody)
	}
	b := newBase(t)
	var delta bytes.Buffer
	if _, err := Encode(t.Context(), b, Header{Recipe: Recipe{Encoder: EncoderNone}}, bytes.NewReader(final), &delta); err != nil {
		t.Fatal(err)
	}
	h, err := ReadHeader(bytes.NewReader(delta.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	var head bytes.Buffer
	writeHeader(&head, h)
	dh := zstd.Header{}
	if err := dh.Decode(delta.Bytes()[head.Len():]); err != nil || dh.WindowSize != uint64(bigWindow) {
		t.Errorf("body window %d (%v), want %d", dh.WindowSize, err, bigWindow)
	}
	var out bytes.Buffer
	if _, err := Apply(t.Context(), b, &delta, &out); err != nil || !bytes.Equal(out.Bytes(), final) {
		t.Errorf("Apply() = %v, same %v", err, bytes.Equal(out.Bytes(), final))
	}
}

// failingWriter takes n bytes, then fails.
type failingWriter struct{ n int }

var errFull = errors.New("the disk is full")

func (f *failingWriter) Write(p []byte) (int, error) {
	if len(p) > f.n {
		return 0, errFull
	}
	f.n -= len(p)
	return len(p), nil
}

// TestRebuildIntoFailingWriter rebuilds a pgzip layer into a writer that
// fails part-way: the error comes back, and no goroutine is left waiting
// (pgzip's Close used to return the write error before ending its own).
func TestRebuildIntoFailingWriter(t *testing.T) {
	mt := time.Unix(1.6e9, 0)
	files := realFiles(t, testTarSize)[:40]
	p := producers[5]
	if p.name != "pgzip-default" {
		t.Fatalf("producers[5] is %s", p.name)
	}
	baseBlob := compressWith(t, p, buildTar(t, layerSpec{files: files, mtime: mt}))
	blob := compressWith(t, p, buildTar(t, layerSpec{files: rebuildFiles(files), mtime: mt.Add(time.Hour)}))
	var delta bytes.Buffer
	if _, err := Prepare(t.Context(), newBase(t, baseBlob), bytes.NewReader(blob), int64(len(blob)), digestOf(blob), &delta); err != nil {
		t.Skipf("no delta to rebuild: %v", err)
	}
	before := runtime.NumGoroutine()
	_, err := Rebuild(t.Context(), newBase(t, baseBlob), bytes.NewReader(delta.Bytes()), &failingWriter{n: len(blob) / 3})
	if !errors.Is(err, errFull) {
		t.Errorf("Rebuild() into a writer that fails = %v, want its error", err)
	}
	deadline := time.Now().Add(2 * time.Second)
	for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > before {
		t.Errorf("%d goroutines after a failed rebuild, %d before", n, before)
	}
}
