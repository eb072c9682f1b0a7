package sublayer

import (
	"bytes"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestMeasure reports delta sizes and timings on large trees. It runs only
// when SUBLAYER_MEASURE names directories (separated by colons);
// SUBLAYER_MEASURE_MB caps the tar. Files of more than 64 MiB are skipped.
func TestMeasure(t *testing.T) {
	roots := os.Getenv("SUBLAYER_MEASURE")
	if roots == "" {
		t.Skip("set SUBLAYER_MEASURE to a directory to measure")
	}
	limit := 150 << 20
	if mb := os.Getenv("SUBLAYER_MEASURE_MB"); mb != "" {
		fmt.Sscan(mb, &limit)
		limit <<= 20
	}
	var files []testFile
	sum := 0
	for _, root := range filepath.SplitList(roots) {
		filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err != nil || sum >= limit {
				return nil
			}
			if fi, err := d.Info(); err == nil && fi.Mode().IsRegular() && fi.Size() <= 64<<20 {
				if data, err := os.ReadFile(p); err == nil {
					files = append(files, testFile{name: strings.TrimPrefix(p, "/"), data: data})
					sum += len(data)
				}
			}
			return nil
		})
	}
	// v2: all mtimes new, 110 files changed, 30 added, 30 removed.
	var v2 []testFile
	removed, changed := 0, 0
	for i, f := range files {
		switch {
		case i%(len(files)/30+1) == 1 && removed < 30:
			removed++
			continue
		case i%(len(files)/110+1) == 2 && changed < 110:
			changed++
			d := bytes.Clone(f.data)
			for j := len(d) / 2; j < len(d) && j < len(d)/2+16; j++ {
				d[j] ^= 0xa5
			}
			v2 = append(v2, testFile{name: f.name, data: append(d, "v2"...)})
		default:
			v2 = append(v2, f)
		}
	}
	for i := 0; i < 30; i++ {
		v2 = append(v2, testFile{name: fmt.Sprintf("added/%d", i), data: goldenInput(20000, uint64(i+500))})
	}
	mt := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	t1 := buildTar(t, layerSpec{files: files, mtime: mt})
	t2 := buildTar(t, layerSpec{files: v2, mtime: mt.Add(24 * time.Hour)})
	t.Logf("%d files, base tar %d MB, final tar %d MB; %d changed, %d removed, 30 added", len(files), len(t1)>>20, len(t2)>>20, changed, removed)
	for _, p := range producers {
		if p.name == "go-gzip-3" || p.name == "zstd-default-readfrom" {
			continue
		}
		b1 := compressWith(t, p, t1)
		b2 := compressWith(t, p, t2)
		pull := newBase(t, b1)
		var delta bytes.Buffer
		start := time.Now()
		st, err := Prepare(t.Context(), pull, bytes.NewReader(b2), int64(len(b2)), digestOf(b2), &delta)
		prep := time.Since(start)
		if err != nil {
			t.Errorf("%s: Prepare() = %v", p.name, err)
			continue
		}
		push := newBase(t, b1)
		start = time.Now()
		if _, err := Rebuild(t.Context(), push, bytes.NewReader(delta.Bytes()), io.Discard); err != nil {
			t.Errorf("%s: Rebuild() = %v", p.name, err)
			continue
		}
		reb := time.Since(start)
		start = time.Now()
		zw, _ := st.Header.Recipe.Compress(io.Discard)
		zw.Write(t2)
		zw.Close()
		comp := time.Since(start)
		t.Logf("%-22s blob %4d MB  delta %7d B (%.2f%%)  patched %d (%d B -> %d B)  literal %d  refs %d  spooled %d MB  prepare %.1fx, rebuild %.1fx one compression",
			p.name, len(b2)>>20, delta.Len(), 100*float64(delta.Len())/float64(len(b2)), st.Patched, st.PatchedBytes, st.PatchBytes, st.Literal, st.Referenced, push.Spooled()>>20,
			prep.Seconds()/comp.Seconds(), reb.Seconds()/comp.Seconds())
	}
}
