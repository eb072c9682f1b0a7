package main

import (
	"archive/tar"
	"compress/gzip"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/imokit/imo/internal/sandbox"
)

// entry is a file of a rebuilt layer: a real file, possibly altered.
type entry struct {
	name  string
	size  int64
	open  func() (io.ReadCloser, error)
	mtime time.Time
}

// rebuild builds a rebuild pair from real files: v1's layer, and v2's,
// which holds the same files with new modification times, except that one
// file in thirty-three has a byte changed in every 64 KiB (as a rebuilt
// binary differs), one in a hundred is gone and as many new ones appear. Both are compressed as Docker does (gzip level 6). It compares a
// pull and push of the layer-level difference with those using sub-layer
// deltas.
func (b *bench) rebuild(budget int64) error {
	fmt.Fprintf(os.Stderr, "building a rebuild pair from about %s MiB of real files...\n", mib(budget))
	files, err := collectFiles(budget)
	if err != nil {
		return err
	}
	sort.Slice(files, func(i, j int) bool { return files[i].name < files[j].name })
	old, nu := time.Unix(1700000000, 0), time.Unix(1750000000, 0)
	var e1, e2 []entry
	changed := map[string]bool{}
	for k, f := range files {
		if k%33 == 7 {
			changed[f.name] = true
		}
	}
	removed := 0
	for k, f := range files {
		e1 = append(e1, entry{name: f.name, size: f.size, open: opener(f.path, false), mtime: old})
		if k%100 == 50 {
			removed++
			continue
		}
		e2 = append(e2, entry{name: f.name, size: f.size, open: opener(f.path, changed[f.name]), mtime: nu})
	}
	for k := range max(removed, 1) {
		text := sandbox.Text(fmt.Sprint("added ", k), 24<<10)
		e2 = append(e2, entry{name: fmt.Sprintf("usr/share/new/file-%02d.txt", k), size: int64(len(text)), mtime: nu,
			open: func() (io.ReadCloser, error) { return io.NopCloser(strings.NewReader(text)), nil }})
	}
	dir := filepath.Join(b.work, "rebuild")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	amd64 := v1.Platform{OS: "linux", Architecture: "amd64"}
	host := b.reg.Host
	for tag, es := range map[string][]entry{"v1": e1, "v2": e2} {
		path := filepath.Join(dir, tag+".tar.gz")
		if err := writeEntries(path, es); err != nil {
			return err
		}
		l, err := tarball.LayerFromFile(path, tarball.WithMediaType(types.DockerLayer))
		if err != nil {
			return err
		}
		img, err := sandbox.Docker.Image(amd64, l)
		if err != nil {
			return err
		}
		if err := remote.Write(ref(host+"/rebuild:"+tag), img); err != nil {
			return err
		}
	}
	base, err := remote.Image(ref(host + "/rebuild:v1"))
	if err != nil {
		return err
	}

	whole, sub := filepath.Join(dir, "layers.tar"), filepath.Join(dir, "sublayer.tar")
	pulls := map[string][]sample{}
	pushes := map[string][]sample{}
	for r := range b.o.runs {
		for _, p := range []struct {
			name, out string
			args      []string
		}{{"layer-level", whole, nil}, {"sub-layer", sub, []string{"--sublayer", "auto"}}} {
			args := append([]string{"pull", "--plain-http", "-q", "--temp-dir", dir}, p.args...)
			s, err := measure(exec.Command(b.imo, append(args, host+"/rebuild:v1", host+"/rebuild:v2", "-o", p.out)...))
			if err != nil {
				return err
			}
			pulls[p.name] = append(pulls[p.name], s)
			repo := fmt.Sprintf("%s/rebuild-%s-%d", host, p.name, r)
			if err := remote.Write(ref(repo+":v1"), base); err != nil {
				return err
			}
			if s, err = measure(exec.Command(b.imo, "push", "--plain-http", "-q", "--temp-dir", dir, p.out, repo+":v2")); err != nil {
				return err
			}
			pushes[p.name] = append(pushes[p.name], s)
		}
	}
	lp, sp := median(pulls["layer-level"]), median(pulls["sub-layer"])
	lu, su := median(pushes["layer-level"]), median(pushes["sub-layer"])
	wholeSize, subSize := fileSize(whole), fileSize(sub)
	b.printf("")
	b.printf("Sub-layer deltas: a %s MiB layer of %d real files rebuilt with new times, %d files changed (a byte in every 64 KiB), %d removed, %d added; gzip level 6.", mib(fileSize(filepath.Join(dir, "v2.tar.gz"))), len(files), len(changed), removed, max(removed, 1))
	b.printf("")
	b.printf("| job | archive (MiB) | ÷ layer-level | time (s) | × layer-level | CPU (s) | peak RSS (MiB) | written (MiB) |")
	b.printf("|---|---|---|---|---|---|---|---|")
	b.printf("| pull, layer-level | %s | 1.000 | %.2f | 1.00 | %.2f | %s | %s |", mib(wholeSize), lp.elapsed.Seconds(), lp.cpu.Seconds(), mib(lp.maxRSS), mib(lp.written))
	b.printf("| pull --sublayer auto | %s | %.3f | %.2f | %.2f | %.2f | %s | %s |", mib(subSize), float64(subSize)/float64(wholeSize), sp.elapsed.Seconds(), sp.elapsed.Seconds()/lp.elapsed.Seconds(), sp.cpu.Seconds(), mib(sp.maxRSS), mib(sp.written))
	b.printf("| push, layer-level | | | %.2f | 1.00 | %.2f | %s | %s |", lu.elapsed.Seconds(), lu.cpu.Seconds(), mib(lu.maxRSS), mib(lu.written))
	b.printf("| push of the sub-layer archive | | | %.2f | %.2f | %.2f | %s | %s |", su.elapsed.Seconds(), su.elapsed.Seconds()/lu.elapsed.Seconds(), su.cpu.Seconds(), mib(su.maxRSS), mib(su.written))
	return nil
}

// opener opens a real file; altered, every 64 KiB has one byte flipped.
func opener(path string, altered bool) func() (io.ReadCloser, error) {
	return func() (io.ReadCloser, error) {
		f, err := os.Open(path)
		if err != nil || !altered {
			return f, err
		}
		return &flipper{ReadCloser: f}, nil
	}
}

// flipper flips the byte at every 64 KiB boundary plus 1000 of what it reads.
type flipper struct {
	io.ReadCloser
	off int64
}

func (f *flipper) Read(p []byte) (int, error) {
	n, err := f.ReadCloser.Read(p)
	for k := range n {
		if (f.off+int64(k))%(64<<10) == 1000 {
			p[k] ^= 0x5a
		}
	}
	f.off += int64(n)
	return n, err
}

// writeEntries writes entries as a tar compressed with gzip level 6.
func writeEntries(path string, es []entry) error {
	out, err := os.Create(path)
	if err != nil {
		return err
	}
	defer out.Close()
	zw, err := gzip.NewWriterLevel(out, gzip.DefaultCompression)
	if err != nil {
		return err
	}
	tw := tar.NewWriter(zw)
	for _, e := range es {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: e.name, Size: e.size, Mode: 0o755, ModTime: e.mtime}); err != nil {
			return err
		}
		in, err := e.open()
		if err != nil {
			return err
		}
		_, err = io.CopyN(tw, in, e.size)
		in.Close()
		if err != nil {
			return fmt.Errorf("%s: %w", e.name, err)
		}
	}
	if err := tw.Close(); err != nil {
		return err
	}
	if err := zw.Close(); err != nil {
		return err
	}
	return out.Close()
}
