package sublayer

import (
	"bytes"
	"io"
	"slices"
	"strings"
	"testing"
	"time"
)

// recorder collects what scanTar passes on.
type recorder struct {
	all   bytes.Buffer
	names []string
}

func (r *recorder) raw(p []byte) error { r.all.Write(p); return nil }

func (r *recorder) content(name string, size int64, rd io.Reader) error {
	r.names = append(r.names, name)
	n, err := io.Copy(&r.all, rd)
	if err == nil && n != size {
		err = io.ErrUnexpectedEOF
	}
	return err
}

func TestScanTar(t *testing.T) {
	files := []testFile{{"./a/one.txt", []byte("one")}, {"/b/two.txt", []byte("two")}}
	long := strings.Repeat("very-long-directory-name/", 8) + "file.txt"
	tarball := buildTar(t, layerSpec{files: files, mtime: time.Unix(1e9, 0), extras: true, pad: 10240})
	// A hard link whose size field is not zero has no data all the same.
	withLink := buildTar(t, layerSpec{files: files, mtime: time.Unix(1e9, 0)})
	i := bytes.Index(withLink, []byte("./a/one.txt"))
	withLink[i+156] = '1'
	copy(withLink[i+124:i+136], "00000000003\x00")
	fixChecksum(withLink[i : i+512])
	withLink = append(withLink[:i+512:i+512], withLink[i+1024:]...) // drop its data block

	for _, tc := range []struct {
		name  string
		tar   []byte
		names []string
	}{
		{"extras", tarball, []string{"a/one.txt", "b/two.txt", long, "gnu/" + long, "xattr.bin"}},
		{"hard link with a size", withLink, []string{"b/two.txt"}},
		{"cut in a header", tarball[:1000], nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var r recorder
			if err := scanTar(bytes.NewReader(tc.tar), &r); err != nil {
				t.Fatalf("scanTar() = %v", err)
			}
			if !bytes.Equal(r.all.Bytes(), tc.tar) {
				t.Errorf("scanTar() passed on %d bytes that differ from the %d read", r.all.Len(), len(tc.tar))
			}
			if !slices.Equal(r.names, tc.names) {
				t.Errorf("scanTar() contents = %q, want %q", r.names, tc.names)
			}
		})
	}
}

func fixChecksum(b []byte) {
	copy(b[148:156], "        ")
	var sum int64
	for _, c := range b {
		sum += int64(c)
	}
	copy(b[148:156], []byte(strings.Repeat("0", 6-len(octal(sum)))+octal(sum)+"\x00 "))
}

func octal(x int64) string {
	if x == 0 {
		return "0"
	}
	var s []byte
	for ; x > 0; x /= 8 {
		s = append([]byte{byte('0' + x%8)}, s...)
	}
	return string(s)
}
