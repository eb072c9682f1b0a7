package volume

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/imokit/imo/archive"
	"github.com/imokit/imo/internal/verify"
)

// testArchive lays out an archive of one image whose layers have the given
// sizes, with random (incompressible) content, and returns it and its
// bytes.
func testArchive(t testing.TB, seed uint64, layerSizes ...int) (*archive.Layout, archive.FetchFrom, []byte) {
	t.Helper()
	rng := rand.New(rand.NewPCG(seed, 1))
	blobs := map[v1.Hash][]byte{}
	desc := func(mt types.MediaType, b []byte) v1.Descriptor {
		h, n, _ := v1.SHA256(bytes.NewReader(b))
		blobs[h] = b
		return v1.Descriptor{MediaType: mt, Digest: h, Size: n}
	}
	var layers []v1.Descriptor
	var planned []archive.PlanBlob
	for _, n := range layerSizes {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		d := desc(types.OCILayer, b)
		layers = append(layers, d)
		planned = append(planned, archive.PlanBlob{MediaType: d.MediaType, Digest: d.Digest, Size: d.Size, Included: true})
	}
	config := desc(types.OCIConfigJSON, []byte(`{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}`))
	planned = append(planned, archive.PlanBlob{MediaType: config.MediaType, Digest: config.Digest, Size: config.Size, Config: true, Included: true})
	manifest, err := json.Marshal(v1.Manifest{SchemaVersion: 2, MediaType: types.OCIManifestSchema1, Config: config, Layers: layers})
	if err != nil {
		t.Fatal(err)
	}
	md := desc(types.OCIManifestSchema1, manifest)
	plan := &archive.Plan{Version: archive.PlanVersion, Blobs: planned,
		Images: []archive.PlanImage{archive.NewPlanImage(archive.ImageRef{Reference: "reg.example/app:v2", Digest: md.Digest}, archive.ImageRef{Reference: "scratch"}, []v1.Descriptor{md})}}
	md.Annotations = map[string]string{archive.RefNameAnnotation: "reg.example/app:v2"}
	l, err := archive.Build(archive.Contents{Plan: plan, Index: &v1.IndexManifest{SchemaVersion: 2, Manifests: []v1.Descriptor{md}},
		Manifests: []archive.Manifest{{Digest: md.Digest, Raw: manifest}}})
	if err != nil {
		t.Fatal(err)
	}
	fetch := func(_ context.Context, d v1.Descriptor) (io.ReadCloser, error) {
		r, err := verify.NewReader(bytes.NewReader(blobs[d.Digest]), d, "memory", nil)
		return io.NopCloser(r), err
	}
	var whole bytes.Buffer
	if err := l.WriteTo(context.Background(), &whole, fetch, nil, 2); err != nil {
		t.Fatal(err)
	}
	fetchFrom := func(_ context.Context, d v1.Descriptor, off int64) (io.ReadCloser, string, error) {
		return io.NopCloser(bytes.NewReader(blobs[d.Digest][off:])), "memory", nil
	}
	return l, fetchFrom, whole.Bytes()
}

// splitInto writes the archive as volumes in a temporary directory.
func splitInto(t testing.TB, l *archive.Layout, fetch archive.FetchFrom, size int64, parity int) []string {
	t.Helper()
	dir := t.TempDir()
	w, err := Create(l, filepath.Join(dir, "difference.tar"), size, parity)
	if err != nil {
		t.Fatal(err)
	}
	journal, err := os.Create(filepath.Join(t.TempDir(), "journal"))
	if err != nil {
		t.Fatal(err)
	}
	defer journal.Close()
	if _, err := l.Resume(journal, w.Salt(), false).Write(context.Background(), w, fetch, 3); err != nil {
		w.Abort()
		t.Fatal(err)
	}
	if err := w.Commit(context.Background()); err != nil {
		t.Fatal(err)
	}
	return w.Paths()
}

// readAll reads the archive a set holds, whole.
func readAll(t testing.TB, paths ...string) ([]byte, *Report, error) {
	t.Helper()
	s, err := Open(paths...)
	if err != nil {
		return nil, nil, err
	}
	defer s.Close()
	rep, err := s.Scan(context.Background())
	if err != nil {
		return nil, nil, err
	}
	b, err := io.ReadAll(io.NewSectionReader(s, 0, s.Size()))
	return b, rep, err
}

func TestSplitAndRead(t *testing.T) {
	t.Parallel()
	l, fetch, whole := testArchive(t, 1, 700<<10, 90<<10, 3<<20)
	tests := []struct {
		name   string
		size   int64
		parity int
	}{
		{"one volume", 8 << 20, 0},
		{"small volumes, no parity", 512 << 10, 0},
		{"parity 1", 1 << 20, 1},
		{"parity 2, the smallest volumes", MinSize, 2},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			paths := splitInto(t, l, fetch, tc.size, tc.parity)
			for _, p := range paths {
				fi, err := os.Stat(p)
				if err != nil {
					t.Fatal(err)
				}
				if fi.Size() > tc.size {
					t.Errorf("%s is %d bytes, more than the volume size %d", p, fi.Size(), tc.size)
				}
			}
			got, rep, err := readAll(t, paths...)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, whole) {
				t.Fatalf("the volumes hold %d bytes that are not the archive's %d", len(got), len(whole))
			}
			if !rep.Whole || !rep.Intact() {
				t.Errorf("the report of an intact set = %+v", rep)
			}
			if n := len(paths) - tc.parity; tc.size == MinSize && n < 3 {
				t.Errorf("a blob of 3 MiB in 64 KiB volumes spans %d volumes", n)
			}
		})
	}
}

// TestRepair loses and damages volumes: parity covers as many as it has,
// and no more.
func TestRepair(t *testing.T) {
	t.Parallel()
	l, fetch, whole := testArchive(t, 2, 300<<10, 500<<10, 200<<10)
	for _, parity := range []int{1, 2} {
		paths := splitInto(t, l, fetch, 256<<10, parity)
		data := len(paths) - parity
		// Every single volume lost, or every pair with parity 2.
		var losses [][]int
		for i := range paths {
			losses = append(losses, []int{i})
			if parity == 2 {
				for k := i + 1; k < len(paths); k++ {
					losses = append(losses, []int{i, k})
				}
			}
		}
		for _, lost := range losses {
			t.Run(fmt.Sprintf("parity %d, lost %v", parity, lost), func(t *testing.T) {
				var kept []string
				for i, p := range paths {
					if !contains(lost, i) {
						kept = append(kept, p)
					}
				}
				got, rep, err := readAll(t, kept...)
				if err != nil || !bytes.Equal(got, whole) {
					t.Fatalf("reading %d of %d data and %d parity volumes: %v", len(kept), data, parity, err)
				}
				if !rep.Whole || countMissing(rep) != len(lost) {
					t.Errorf("report = %+v, want whole with %d missing", rep, len(lost))
				}
			})
		}
		t.Run(fmt.Sprintf("parity %d, one too many lost", parity), func(t *testing.T) {
			_, rep, err := readAll(t, paths[parity+1:]...)
			if !errors.Is(err, ErrIncomplete) || rep == nil || rep.Whole || !errors.Is(rep.Err(), ErrIncomplete) {
				t.Errorf("reading with %d volumes lost = %v, report %+v; want ErrIncomplete", parity+1, err, rep)
			}
		})
	}
}

// TestDamage flips bytes in a data and in a parity volume: the scan names
// the piece and what it holds, reads repair it, and damage beyond parity
// is an error naming each damaged volume.
func TestDamage(t *testing.T) {
	t.Parallel()
	l, fetch, whole := testArchive(t, 3, 900<<10, 400<<10)
	paths := splitInto(t, l, fetch, 512<<10, 1)
	damage := func(t *testing.T, path string, at int64) string {
		t.Helper()
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		v, err := readVolume(path)
		if err != nil {
			t.Fatal(err)
		}
		v.f.Close()
		b[v.payloadAt+at] ^= 0xff
		out := filepath.Join(t.TempDir(), filepath.Base(path))
		if err := os.WriteFile(out, b, 0o644); err != nil {
			t.Fatal(err)
		}
		return out
	}
	with := func(i int, path string) []string {
		out := append([]string{}, paths...)
		out[i] = path
		return out
	}
	parity := len(paths) - 1
	for _, tc := range []struct {
		name  string
		paths []string
		vol   int
	}{
		{"a data volume", with(1, damage(t, paths[1], 100)), 1},
		{"the parity volume", with(parity, damage(t, paths[parity], 5000)), parity},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, rep, err := readAll(t, tc.paths...)
			if err != nil || !bytes.Equal(got, whole) {
				t.Fatalf("reading a set with one damaged volume: %v", err)
			}
			if !rep.Whole || rep.Intact() || len(rep.Volumes[tc.vol].Damaged) != 1 {
				t.Fatalf("report = %+v, want volume %d damaged in one piece, and whole", rep, tc.vol)
			}
			if d := rep.Volumes[tc.vol].Damaged[0]; d.Piece != 1 || (tc.vol < parity && !strings.Contains(d.String(), "blobs/sha256/")) {
				t.Errorf("the damaged piece is %s, want piece 1 naming the blob it holds", d)
			}
		})
	}
	t.Run("beyond parity", func(t *testing.T) {
		ps := with(0, damage(t, paths[0], 10))
		ps[parity] = damage(t, paths[parity], 10)
		_, _, err := readAll(t, ps...)
		if !errors.Is(err, ErrIncomplete) || !strings.Contains(err.Error(), "data volume 1 of") || !strings.Contains(err.Error(), "parity volume 1 of 1") {
			t.Errorf("reading a stripe damaged in two volumes with parity 1 = %v, want ErrIncomplete naming both", err)
		}
	})
}

// TestOpenVolumes opens sets by directory, by one volume, and refuses
// files that are not volumes and volumes of two sets.
func TestOpenVolumes(t *testing.T) {
	t.Parallel()
	l, fetch, whole := testArchive(t, 4, 200<<10)
	paths := splitInto(t, l, fetch, 128<<10, 1)
	for name, args := range map[string][]string{
		"its directory":            {filepath.Dir(paths[0])},
		"one volume":               {paths[1]},
		"every volume, any order":  {paths[2], paths[0], paths[1]},
		"a volume given twice":     {paths[0], paths[0], paths[1], paths[2]},
		"the archive's own volume": {paths[0], filepath.Dir(paths[0])},
	} {
		got, _, err := readAll(t, args...)
		if err != nil || !bytes.Equal(got, whole) {
			t.Errorf("opening %s: %v", name, err)
		}
	}
	other := splitInto(t, l, fetch, 160<<10, 0)
	if _, err := Open(paths[0], other[0]); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "2 sets") {
		t.Errorf("Open of volumes of two sets = %v, want ErrInvalid naming both", err)
	}
	notVolume := filepath.Join(t.TempDir(), "notes.txt")
	os.WriteFile(notVolume, []byte("hello"), 0o644)
	if _, err := Open(paths[0], notVolume); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "notes.txt is not a volume") {
		t.Errorf("Open of a file that is not a volume = %v", err)
	}
	if _, err := Open(filepath.Join(t.TempDir(), "absent.tar")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Open of a path that does not exist = %v", err)
	}
}

// TestResumeShortVolume resumes a set whose partial volume is shorter than
// the journal says (a crash between writes, a volume deleted by hand): the
// missing bytes are fetched again, and the set is whole.
func TestResumeShortVolume(t *testing.T) {
	t.Parallel()
	l, fetch, whole := testArchive(t, 6, 300<<10)
	dir := t.TempDir()
	out := filepath.Join(dir, "difference.tar")
	journal, err := os.Create(filepath.Join(dir, "journal"))
	if err != nil {
		t.Fatal(err)
	}
	defer journal.Close()
	w, err := Create(l, out, 128<<10, 1)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := l.Resume(journal, w.Salt(), false).Write(context.Background(), w, fetch, 3); err != nil {
		t.Fatal(err)
	}
	w.Keep() // as an interrupted pull leaves it, the journal claiming every byte
	partials, _ := filepath.Glob(filepath.Join(dir, "*.partial"))
	if len(partials) < 2 {
		t.Fatalf("partial volumes: %v", partials)
	}
	os.Truncate(partials[1], 1000)
	w, err = Create(l, out, 128<<10, 1)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := l.Resume(journal, w.Salt(), false).Write(context.Background(), w, fetch, 3); err != nil {
		t.Fatalf("resuming with a volume cut short = %v", err)
	}
	if err := w.Commit(context.Background()); err != nil {
		t.Fatal(err)
	}
	got, _, err := readAll(t, w.Paths()...)
	if err != nil || !bytes.Equal(got, whole) {
		t.Errorf("the resumed set reads %v, and differs: %v", err, !bytes.Equal(got, whole))
	}
}

// TestSignedSplitsDiffer checks that two splits of one archive signed
// twice (ECDSA signatures differ each time) are two sets, so that a repair
// never mixes their volumes.
func TestSignedSplitsDiffer(t *testing.T) {
	l, _, _ := testArchive(t, 7, 100<<10)
	plan := []byte(`{"imoArchiveVersion":1}`)
	var sets []string
	for _, sig := range []string{"MEUCIQ-first", "MEUCIQ-other"} {
		s, err := newSplit(l.Size(), l.Entries(), plan, []byte(sig), 128<<10, 1)
		if err != nil {
			t.Fatal(err)
		}
		sets = append(sets, s.set)
	}
	if sets[0] == sets[1] {
		t.Errorf("two signatures of one plan make one set, %s", sets[0])
	}
}

// TestForgedHeader gives a parity volume a header that claims another
// place in a set of another shape (same size, same set name): it is set
// aside as not of the set, and the set reads whole.
func TestForgedHeader(t *testing.T) {
	t.Parallel()
	l, fetch, whole := testArchive(t, 5, 200<<10)
	paths := splitInto(t, l, fetch, 128<<10, 1)
	parity := paths[len(paths)-1]
	b, err := os.ReadFile(parity)
	if err != nil {
		t.Fatal(err)
	}
	forged := bytes.Replace(bytes.Replace(b, []byte(`"parityVolumes": 1`), []byte(`"parityVolumes": 2`), 1), []byte(`"number": 1`), []byte(`"number": 2`), 1)
	if bytes.Equal(forged, b) {
		t.Fatal("the parity volume's header is not where the test looks")
	}
	last := filepath.Join(t.TempDir(), "zz-"+filepath.Base(parity)) // read after the others
	os.WriteFile(last, forged, 0o644)
	s, err := Open(append(paths[:len(paths)-1:len(paths)-1], last)...)
	if err != nil {
		t.Fatalf("Open() with a forged parity volume = %v", err)
	}
	defer s.Close()
	got := make([]byte, len(whole))
	if _, err := s.ReadAt(got, 0); err != nil || !bytes.Equal(got, whole) {
		t.Errorf("the set with a forged parity volume set aside reads %v", err)
	}
}

func TestTooSmall(t *testing.T) {
	t.Parallel()
	l, _, _ := testArchive(t, 5, 10)
	if _, err := newSplit(l.Size(), l.Entries(), bytes.Repeat([]byte("p"), 70<<10), nil, MinSize, 0); err == nil || !strings.Contains(err.Error(), "too small") {
		t.Errorf("splitting with a plan larger than a volume = %v, want an error saying the size is too small", err)
	}
	if _, err := newSplit(l.Size(), l.Entries(), l.PlanBytes(), nil, MinSize-1, 0); err == nil {
		t.Error("a volume size under 64 KiB was accepted")
	}
}

func TestParseSize(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in   string
		want int64
	}{
		{"65536", 65536},
		{"4.7G", 4_700_000_000},
		{"4GiB", 4 << 30},
		{"700MB", 700_000_000},
		{"fat32", 4<<30 - 1},
		{"DVD", 4_700_372_992 - 4<<20},
		{"bd25", 25_025_314_816 - 4<<20},
		{"64KiB", 65536},
		{"1k", 0},
		{"-5G", 0},
		{"floppy", 0},
		{"", 0},
	}
	for _, tc := range tests {
		got, err := ParseSize(tc.in)
		if (err != nil) != (tc.want == 0) || got != tc.want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", tc.in, got, err, tc.want)
		}
	}
}

func TestNames(t *testing.T) {
	t.Parallel()
	d, p := Names("/out/difference.tar", 12, 2)
	if d[0] != "/out/difference.vol01-of-12.tar" || d[11] != "/out/difference.vol12-of-12.tar" || p[1] != "/out/difference.par2-of-2.tar" {
		t.Errorf("Names = %v, %v", d, p)
	}
	if d, _ := Names("release", 1, 0); d[0] != "release.vol1-of-1.tar" {
		t.Errorf("Names(release) = %v", d)
	}
}

func contains(s []int, v int) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

func countMissing(r *Report) int {
	n := 0
	for _, v := range r.Volumes {
		if v.Missing() {
			n++
		}
	}
	return n
}

// FuzzOpen feeds Open and the reads that follow arbitrary volume files: a
// volume of a one-volume set, mutated. It must never panic, and what reads
// whole must match the sums the volume carries.
func FuzzOpen(f *testing.F) {
	l, fetch, _ := testArchive(f, 6, 40<<10, 10<<10)
	for _, parity := range []int{0, 1} {
		paths := splitInto(f, l, fetch, 256<<10, parity)
		b, err := os.ReadFile(paths[0])
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		path := filepath.Join(t.TempDir(), "v.tar")
		if err := os.WriteFile(path, b, 0o644); err != nil {
			t.Fatal(err)
		}
		s, err := Open(path)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("Open = %v, want ErrInvalid", err)
			}
			return
		}
		defer s.Close()
		rep, err := s.Scan(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		_, err = io.Copy(io.Discard, io.NewSectionReader(s, 0, s.Size()))
		if rep.Whole != (err == nil) {
			t.Errorf("the scan says whole: %v; reading the set gave %v", rep.Whole, err)
		}
	})
}
