package sublayer

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	kgzip "github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	"github.com/klauspost/pgzip"
)

// testFile is one regular file of a test layer.
type testFile struct {
	name string
	data []byte
}

var (
	realFilesOnce []testFile
	realFilesDone bool
)

// realFiles returns up to total bytes of files from this machine's /usr,
// in a fixed order, topped up with deterministic pseudo-text when the
// machine has fewer. The same machine always gives the same files.
func realFiles(t testing.TB, total int) []testFile {
	t.Helper()
	if realFilesDone {
		return realFilesOnce
	}
	var files []testFile
	sum := 0
	roots := []string{"/usr/share/doc", "/usr/bin", "/usr/lib"}
	for n, root := range roots {
		budget := total * (n + 1) / len(roots)
		_ = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if sum >= budget {
				return fs.SkipAll
			}
			if err != nil {
				return nil
			}
			if !d.Type().IsRegular() {
				return nil
			}
			fi, err := d.Info()
			if err != nil || fi.Size() == 0 || fi.Size() > 256<<10 {
				return nil
			}
			data, err := os.ReadFile(p)
			if err != nil {
				return nil
			}
			files = append(files, testFile{name: strings.TrimPrefix(p, "/"), data: data})
			sum += len(data)
			return nil
		})
	}
	for i := 0; sum < total; i++ {
		data := goldenInput(20<<10+i*1000, uint64(100+i))
		files = append(files, testFile{name: fmt.Sprintf("usr/share/gen/file%03d.txt", i), data: data})
		sum += len(data)
	}
	realFilesOnce, realFilesDone = files, true
	return files
}

// layerSpec describes a layer tar to build.
type layerSpec struct {
	files   []testFile
	mtime   time.Time
	pad     int  // pad the tar with zeros to a multiple of this; 0 for none
	extras  bool // PAX records, long names, links, empty files
	garbage []byte
}

// buildTar writes a layer tar as image builders do.
func buildTar(t testing.TB, s layerSpec) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	dirs := map[string]bool{}
	write := func(h *tar.Header, data []byte) {
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write(data); err != nil {
			t.Fatal(err)
		}
	}
	for _, f := range s.files {
		for d := filepath.Dir(f.name); d != "." && !dirs[d]; d = filepath.Dir(d) {
			dirs[d] = true
		}
	}
	var dl []string
	for d := range dirs {
		dl = append(dl, d)
	}
	sort.Strings(dl)
	for _, d := range dl {
		write(&tar.Header{Typeflag: tar.TypeDir, Name: d + "/", Mode: 0o755, ModTime: s.mtime, Format: tar.FormatPAX}, nil)
	}
	for _, f := range s.files {
		write(&tar.Header{Typeflag: tar.TypeReg, Name: f.name, Mode: 0o644, Size: int64(len(f.data)), ModTime: s.mtime, Uname: "root", Gname: "root", Format: tar.FormatPAX}, f.data)
	}
	if s.extras && len(s.files) > 0 {
		long := strings.Repeat("very-long-directory-name/", 8) + "file.txt"
		write(&tar.Header{Typeflag: tar.TypeReg, Name: long, Mode: 0o644, Size: int64(len(s.files[0].data)), ModTime: s.mtime, Format: tar.FormatPAX}, s.files[0].data)
		write(&tar.Header{Typeflag: tar.TypeReg, Name: "gnu/" + long, Mode: 0o644, Size: 5, ModTime: s.mtime, Format: tar.FormatGNU}, []byte("hello"))
		write(&tar.Header{Typeflag: tar.TypeReg, Name: "xattr.bin", Mode: 0o755, Size: 3, ModTime: s.mtime.Add(time.Nanosecond * 1234), PAXRecords: map[string]string{"SCHILY.xattr.security.capability": "\x01\x00\x00\x02"}, Format: tar.FormatPAX}, []byte("abc"))
		write(&tar.Header{Typeflag: tar.TypeReg, Name: "empty", Mode: 0o644, ModTime: s.mtime}, nil)
		write(&tar.Header{Typeflag: tar.TypeLink, Name: "hardlink", Linkname: s.files[0].name, ModTime: s.mtime}, nil)
		write(&tar.Header{Typeflag: tar.TypeSymlink, Name: "symlink", Linkname: "/" + s.files[0].name, ModTime: s.mtime}, nil)
		write(&tar.Header{Typeflag: tar.TypeReg, Name: "usr/share/.wh.removed", Mode: 0o644, ModTime: s.mtime}, nil)
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if s.pad > 0 {
		for buf.Len()%s.pad != 0 {
			buf.WriteByte(0)
		}
	}
	buf.Write(s.garbage)
	return buf.Bytes()
}

// rebuildFiles turns base files into the files of a rebuilt layer: every
// tenth file changed a little, two removed, two added.
func rebuildFiles(base []testFile) []testFile {
	var out []testFile
	for i, f := range base {
		switch {
		case i == 3 || i == 17:
			continue // removed
		case i%10 == 5:
			d := bytes.Clone(f.data)
			for j := len(d) / 3; j < len(d) && j < len(d)/3+8; j++ {
				d[j] ^= 0x5a
			}
			d = append(d, "rebuilt\n"...)
			out = append(out, testFile{name: f.name, data: d})
		default:
			out = append(out, f)
		}
	}
	out = append(out,
		testFile{name: "usr/share/new/added1.txt", data: goldenInput(3000, 77)},
		testFile{name: "usr/share/new/added2.txt", data: goldenInput(1500, 78)})
	return out
}

// producer compresses a tar as one kind of real image builder does.
type producer struct {
	name     string
	compress func(w io.Writer, tarball []byte) error
	encoder  string
	level    int
}

func copyAndClose(zw io.WriteCloser, tarball []byte) error {
	if _, err := io.Copy(zw, bytes.NewReader(tarball)); err != nil {
		return err
	}
	return zw.Close()
}

var producers = []producer{
	{"go-gzip-1", func(w io.Writer, b []byte) error {
		zw, _ := gzip.NewWriterLevel(w, gzip.BestSpeed)
		return copyAndClose(zw, b)
	}, EncoderGzip, 1},
	{"go-gzip-default", func(w io.Writer, b []byte) error { return copyAndClose(gzip.NewWriter(w), b) }, EncoderGzip, 6},
	{"go-gzip-9", func(w io.Writer, b []byte) error {
		zw, _ := gzip.NewWriterLevel(w, gzip.BestCompression)
		return copyAndClose(zw, b)
	}, EncoderGzip, 9},
	{"go-gzip-3", func(w io.Writer, b []byte) error {
		zw, _ := gzip.NewWriterLevel(w, 3)
		return copyAndClose(zw, b)
	}, EncoderGzip, 3},
	{"klauspost-gzip-default", func(w io.Writer, b []byte) error { return copyAndClose(kgzip.NewWriter(w), b) }, EncoderKlauspostGzip, 5},
	{"pgzip-default", func(w io.Writer, b []byte) error { return copyAndClose(pgzip.NewWriter(w), b) }, EncoderPgzip, 5},
	{"zstd-default-write", func(w io.Writer, b []byte) error {
		zw, err := zstd.NewWriter(w)
		if err != nil {
			return err
		}
		for p := b; len(p) > 0; {
			k := min(len(p), 32<<10)
			if _, err := zw.Write(p[:k]); err != nil {
				return err
			}
			p = p[k:]
		}
		return zw.Close()
	}, EncoderZstd, int(zstd.SpeedDefault)},
	{"zstd-default-readfrom", func(w io.Writer, b []byte) error {
		// io.Copy from a pipe uses only ReadFrom, as containerd does.
		zw, err := zstd.NewWriter(w)
		if err != nil {
			return err
		}
		pr, pw := io.Pipe()
		go func() { _, err := pw.Write(b); pw.CloseWithError(err) }()
		if _, err := io.Copy(zw, pr); err != nil {
			return err
		}
		return zw.Close()
	}, EncoderZstd, int(zstd.SpeedDefault)},
	{"uncompressed", func(w io.Writer, b []byte) error { _, err := w.Write(b); return err }, EncoderNone, 0},
}

func compressWith(t testing.TB, p producer, tarball []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := p.compress(&buf, tarball); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func digestOf(b []byte) v1.Hash {
	h, _, _ := v1.SHA256(bytes.NewReader(b))
	return h
}

func sha(b []byte) string {
	return fmt.Sprintf("sha256:%x", sha256.Sum256(b))
}

func newBase(t testing.TB, layers ...[]byte) *Base {
	t.Helper()
	b, err := NewBase(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	for _, l := range layers {
		if err := b.AddLayer(t.Context(), bytes.NewReader(l), sha(l)); err != nil {
			t.Fatal(err)
		}
	}
	return b
}

func sha256Of(b []byte) [32]byte { return sha256.Sum256(b) }

func contextWithCancel(t testing.TB) (context.Context, context.CancelFunc) {
	return context.WithCancel(t.Context())
}
