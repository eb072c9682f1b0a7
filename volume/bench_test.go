package volume

import (
	"context"
	"os"
	"path/filepath"
	"testing"
)

// BenchmarkSplit writes a 256 MiB archive as 50 MiB volumes with and
// without parity, against writing it as one file, from blobs in memory:
// what volumes add to a pull, the network aside.
func BenchmarkSplit(b *testing.B) {
	l, fetch, whole := testArchive(b, 9, 64<<20, 64<<20, 64<<20, 64<<20)
	for _, bc := range []struct {
		name   string
		size   int64
		parity int
	}{{"one file", 0, 0}, {"volumes", 50 << 20, 0}, {"volumes, parity 2", 50 << 20, 2}} {
		b.Run(bc.name, func(b *testing.B) {
			b.SetBytes(int64(len(whole)))
			for b.Loop() {
				dir := b.TempDir()
				if bc.size == 0 {
					f, err := os.Create(filepath.Join(dir, "a.tar"))
					if err != nil {
						b.Fatal(err)
					}
					if _, err := l.Resume(&fileAt{f, l.Size()}, "file", false).Write(context.Background(), f, fetch, 4); err != nil {
						b.Fatal(err)
					}
					f.Close()
					continue
				}
				splitInto(b, l, fetch, bc.size, bc.parity)
			}
		})
	}
}

// fileAt reads and writes a file from base on.
type fileAt struct {
	f    *os.File
	base int64
}

func (o *fileAt) ReadAt(p []byte, off int64) (int, error)  { return o.f.ReadAt(p, o.base+off) }
func (o *fileAt) WriteAt(p []byte, off int64) (int, error) { return o.f.WriteAt(p, o.base+off) }
