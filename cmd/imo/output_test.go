//go:build unix

package main

import (
	"bytes"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestOutputKinds runs "imo pull -o" and "imo inventory -o" at every kind
// of path: a regular file is replaced whole, a symbolic link's target is
// replaced and the link kept, a FIFO and a character device are written
// straight to and kept, and a directory is refused before anything is
// fetched. Every node is made under the test's directory.
func TestOutputKinds(t *testing.T) {
	t.Parallel()
	src, site, _ := registries(t, nil, nil)
	pullArgs := func(out string) []string {
		return []string{"pull", "--plain-http", "-q", src.Ref("app:v1"), src.Ref("app:v2"), "-o", out}
	}
	reference := filepath.Join(t.TempDir(), "reference.tar")
	if r := imoCmd(t, "", pullArgs(reference)...); r.code != 0 {
		t.Fatal(r)
	}
	want, err := os.ReadFile(reference)
	if err != nil {
		t.Fatal(err)
	}

	t.Run("symlink", func(t *testing.T) {
		dir := t.TempDir()
		target, link := filepath.Join(dir, "real.tar"), filepath.Join(dir, "link.tar")
		if err := os.WriteFile(target, []byte("old"), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink("real.tar", link); err != nil {
			t.Fatal(err)
		}
		if r := imoCmd(t, "", pullArgs(link)...); r.code != 0 {
			t.Fatal(r)
		}
		if fi, err := os.Lstat(link); err != nil || fi.Mode()&fs.ModeSymlink == 0 {
			t.Errorf("imo pull -o LINK replaced the link")
		}
		if got, _ := os.ReadFile(target); !bytes.Equal(got, want) {
			t.Errorf("imo pull -o LINK: the link's target does not hold the archive")
		}
		if fi, _ := os.Stat(target); fi.Mode().Perm() != 0o600 {
			t.Errorf("the target's mode became %v, want 0600", fi.Mode())
		}
	})

	t.Run("FIFO", func(t *testing.T) {
		fifo := filepath.Join(t.TempDir(), "fifo")
		if err := syscall.Mkfifo(fifo, 0o600); err != nil {
			t.Fatal(err)
		}
		got := make(chan []byte, 1)
		go func() {
			f, err := os.Open(fifo)
			if err != nil {
				got <- nil
				return
			}
			defer f.Close()
			b, _ := io.ReadAll(f)
			got <- b
		}()
		r := imoCmd(t, "", pullArgs(fifo)...)
		if r.code != 0 {
			t.Fatal(r)
		}
		select {
		case b := <-got:
			if !bytes.Equal(b, want) {
				t.Errorf("the FIFO's reader got %d bytes, want the %d-byte archive", len(b), len(want))
			}
		case <-time.After(30 * time.Second):
			t.Errorf("the FIFO's reader got nothing")
		}
		if fi, err := os.Lstat(fifo); err != nil || fi.Mode()&fs.ModeNamedPipe == 0 {
			t.Errorf("imo pull -o FIFO replaced the FIFO")
		}
	})

	t.Run("character device", func(t *testing.T) {
		null := filepath.Join(t.TempDir(), "null")
		if err := syscall.Mknod(null, syscall.S_IFCHR|0o666, 1<<8|3); err != nil { // /dev/null's numbers
			t.Skipf("cannot make a device node here: %v", err)
		}
		for _, args := range [][]string{
			pullArgs(null),
			{"inventory", "--plain-http", "-q", site.Host, "app", "-o", null},
		} {
			if r := imoCmd(t, "", args...); r.code != 0 {
				t.Errorf("imo %s -o DEVICE:\n%s", args[0], r)
			}
			if fi, err := os.Lstat(null); err != nil || fi.Mode()&fs.ModeCharDevice == 0 {
				t.Fatalf("imo %s -o DEVICE replaced the device node", args[0])
			}
		}
	})

	t.Run("directory", func(t *testing.T) {
		dir := t.TempDir()
		for _, args := range [][]string{
			pullArgs(dir),
			pullArgs(filepath.Join(dir, "new") + "/"),
			{"inventory", "--plain-http", "-q", site.Host, "app", "-o", dir},
		} {
			src.ResetCounts()
			site.ResetCounts()
			r := imoCmd(t, "", args...)
			if r.code != exitUsage || !strings.Contains(r.stderr, "directory") {
				t.Errorf("imo %s -o %s: want a usage error naming the directory:\n%s", args[0], args[len(args)-1], r)
			}
			if n := requests(src) + requests(site); n != 0 {
				t.Errorf("imo %s -o DIR sent %d requests before refusing", args[0], n)
			}
		}
		if entries, _ := os.ReadDir(dir); len(entries) != 0 {
			t.Errorf("refused pulls left %d files in the directory", len(entries))
		}
	})
}
