//go:build unix

package outfile

import (
	"context"
	"errors"
	"io"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// mknod makes a device node under the test's directory, or skips the test
// where the machine does not allow it (not root, a user namespace).
func mknod(t *testing.T, name string, mode uint32, major, minor int) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	dev := (major << 8) | minor
	if err := syscall.Mknod(path, mode|0o666, dev); err != nil {
		t.Skipf("cannot make a device node here: %v", err)
	}
	return path
}

func write(t *testing.T, path, content string) error {
	t.Helper()
	f, err := Open(context.Background(), path)
	if err != nil {
		return err
	}
	if _, err := io.WriteString(f, content); err != nil {
		f.Abort()
		return err
	}
	return f.Commit()
}

func TestRegularAndNew(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "out.tar")
	if err := write(t, path, "first"); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o644 {
		t.Fatalf("a new file: %v, mode %v, want 0644", err, fi.Mode())
	}
	if err := os.Chmod(path, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := write(t, path, "second"); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(path)
	fi, _ := os.Stat(path)
	if string(b) != "second" || fi.Mode().Perm() != 0o600 {
		t.Errorf("a replaced file holds %q with mode %v, want %q with its old mode 0600", b, fi.Mode(), "second")
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Errorf("the directory holds %d entries, want the file alone", len(entries))
	}
}

func TestAbortKeepsTheOldFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "out.tar")
	if err := os.WriteFile(path, []byte("old"), 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := Open(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(f, "half of the new")
	f.Abort()
	if b, _ := os.ReadFile(path); string(b) != "old" {
		t.Errorf("after Abort the file holds %q, want %q", b, "old")
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Errorf("Abort left %d entries, want the old file alone", len(entries))
	}
}

func TestSymlinks(t *testing.T) {
	dir := t.TempDir()
	target := filepath.Join(dir, "real.tar")
	if err := os.WriteFile(target, []byte("old"), 0o640); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "link.tar")
	if err := os.Symlink("real.tar", link); err != nil {
		t.Fatal(err)
	}
	if err := write(t, link, "new"); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Lstat(link); err != nil || fi.Mode()&fs.ModeSymlink == 0 {
		t.Errorf("the link was replaced: %v %v", fi.Mode(), err)
	}
	if b, _ := os.ReadFile(target); string(b) != "new" {
		t.Errorf("the link's target holds %q, want %q", b, "new")
	}
	if fi, _ := os.Stat(target); fi.Mode().Perm() != 0o640 {
		t.Errorf("the target's mode became %v, want 0640", fi.Mode())
	}

	// A dangling link: the file is created where it points.
	dangling := filepath.Join(dir, "dangling.tar")
	if err := os.Symlink(filepath.Join(dir, "sub", "..", "made.tar"), dangling); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(dir, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := write(t, dangling, "made"); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(filepath.Join(dir, "made.tar")); err != nil || string(b) != "made" {
		t.Errorf("through a dangling link: %q, %v", b, err)
	}
	if fi, err := os.Lstat(dangling); err != nil || fi.Mode()&fs.ModeSymlink == 0 {
		t.Errorf("the dangling link was replaced")
	}

	loop := filepath.Join(dir, "loop")
	if err := os.Symlink("loop", loop); err != nil {
		t.Fatal(err)
	}
	if err := Check(loop); err == nil {
		t.Error("Check(a link to itself) = nil")
	}
}

func TestFIFO(t *testing.T) {
	path := filepath.Join(t.TempDir(), "fifo")
	if err := syscall.Mkfifo(path, 0o600); err != nil {
		t.Fatal(err)
	}
	got := make(chan string, 1)
	go func() {
		f, err := os.Open(path)
		if err != nil {
			got <- err.Error()
			return
		}
		defer f.Close()
		b, _ := io.ReadAll(f)
		got <- string(b)
	}()
	if err := write(t, path, "streamed"); err != nil {
		t.Fatal(err)
	}
	if s := <-got; s != "streamed" {
		t.Errorf("the reader got %q, want %q", s, "streamed")
	}
	if fi, err := os.Lstat(path); err != nil || fi.Mode()&fs.ModeNamedPipe == 0 {
		t.Errorf("the FIFO was replaced: %v", fi.Mode())
	}
}

// TestFIFOInterrupted checks that waiting for a FIFO's reader, and a write
// that a reader does not take, both end when the context does.
func TestFIFOInterrupted(t *testing.T) {
	path := filepath.Join(t.TempDir(), "fifo")
	if err := syscall.Mkfifo(path, 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if _, err := Open(ctx, path); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Open(a FIFO nobody reads) = %v, want the context's error", err)
	}

	reader, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer reader.Close()
	ctx, cancel = context.WithCancel(context.Background())
	f, err := Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := f.Write(make([]byte, 4<<20)) // more than the pipe holds
		done <- err
	}()
	time.Sleep(50 * time.Millisecond)
	cancel()
	select {
	case err := <-done:
		if err == nil {
			t.Error("a write nobody read ended without error")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a write to a FIFO nobody reads did not end with its context")
	}
	f.Abort()
}

func TestCharDevice(t *testing.T) {
	path := mknod(t, "null", syscall.S_IFCHR, 1, 3) // what /dev/null is
	if err := write(t, path, "discarded"); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Lstat(path); err != nil || fi.Mode()&fs.ModeCharDevice == 0 {
		t.Errorf("the device node was replaced: %v", fi.Mode())
	}
}

func TestRefused(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	linkToDir := filepath.Join(dir, "linkdir")
	if err := os.Symlink(dir, linkToDir); err != nil {
		t.Fatal(err)
	}
	tests := []struct{ name, path string }{
		{"a directory", dir},
		{"a name ending in /", filepath.Join(dir, "new") + "/"},
		{"a link to a directory", linkToDir},
		{"a socket", sock},
		{"a missing directory", filepath.Join(dir, "no", "such", "out.tar")},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if err := write(t, tc.path, "x"); err == nil {
				t.Errorf("writing to %s succeeded", tc.path)
			}
		})
	}
	block := mknod(t, "block", syscall.S_IFBLK, 7, 0)
	if err := Check(block); !errors.Is(err, ErrRefused) {
		t.Errorf("Check(a block device) = %v, want ErrRefused", err)
	}
	if fi, err := os.Lstat(block); err != nil || fi.Mode()&fs.ModeDevice == 0 {
		t.Error("the block device node was touched")
	}
}
