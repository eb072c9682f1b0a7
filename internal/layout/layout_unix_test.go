//go:build unix

package layout

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/imokit/imo/archive"
)

// TestNotRegular checks that a FIFO where a layout's file should be is
// refused, not opened: opening it would wait for a writer for ever.
func TestNotRegular(t *testing.T) {
	ctx := context.Background()
	dir, desc := newLayout(t, `{"schemaVersion":2,"manifests":[]}`)
	l, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	blob := filepath.Join(dir, "blobs", "sha256", desc.Digest.Hex)
	os.Remove(blob)
	if err := syscall.Mkfifo(blob, 0o644); err != nil {
		t.Skipf("no FIFOs here: %v", err)
	}
	if _, err := l.Blob(ctx, desc, nil); !errors.Is(err, ErrInvalid) {
		t.Errorf("Blob() of a FIFO = %v, want ErrInvalid", err)
	}
	os.Remove(filepath.Join(dir, archive.IndexFile))
	syscall.Mkfifo(filepath.Join(dir, archive.IndexFile), 0o644)
	if _, err := Open(dir); !errors.Is(err, ErrInvalid) {
		t.Errorf("Open() of a layout whose index.json is a FIFO = %v, want ErrInvalid", err)
	}
}

// TestLock checks that a second writer waits for the first to close.
func TestLock(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "site")
	first, err := Create(context.Background(), dir)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if second, err := Create(ctx, dir); !errors.Is(err, context.DeadlineExceeded) {
		if second != nil {
			second.Close()
		}
		t.Errorf("a second Create while the first holds the layout = %v, want it to wait", err)
	}
	first.Close()
	second, err := Create(context.Background(), dir)
	if err != nil {
		t.Fatalf("Create() after the first closed = %v", err)
	}
	second.Close()
}
