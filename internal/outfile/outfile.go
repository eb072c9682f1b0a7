// Package outfile opens the path a user names for output, and writes it
// without ever destroying what the path names.
//
// A regular file, or a path that does not exist yet, is written atomically:
// into a temporary file beside it, renamed over it once complete, so that
// it appears complete or not at all. A symbolic link is followed and its
// target replaced that way; the link stays. A FIFO or a character device
// (a tape, /dev/null) is written straight to, in order, never replaced. A
// directory, a block device, a socket or a path ending in "/" is refused
// before anything is written.
package outfile

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// ErrRefused means the path names something outfile will not write to: a
// directory, a block device, a socket.
var ErrRefused = errors.New("refusing to write there")

// maxLinks bounds how many symbolic links are followed, as the kernel does.
const maxLinks = 40

// File is an output being written. Write to it (or, when [File.Direct] is
// false, WriteAt), then Commit it, or Abort it on any failure.
type File struct {
	*os.File
	path   string // as the user gave it
	target string // where the temporary file is renamed to; "" when direct
	mode   fs.FileMode
	stop   func() bool // ends the watch that interrupts writes when ctx ends
	done   bool
}

// Check refuses, before any work starts, a path that Open would refuse
// for what it names: a directory (or a name ending in "/"), a block
// device, a socket. It opens nothing.
func Check(path string) error {
	_, _, _, err := classify(path)
	return err
}

// kind is how an output is written.
type kind int

const (
	replace kind = iota // a temporary file beside target, renamed over it
	direct              // the path itself, in order
)

// classify says how path is written, and for a replaced file, which path
// is replaced (symbolic links resolved) and the mode to give it.
func classify(path string) (kind, string, fs.FileMode, error) {
	if path == "" {
		return 0, "", 0, fmt.Errorf("%w: an empty path", ErrRefused)
	}
	if strings.HasSuffix(path, "/") || strings.HasSuffix(path, string(filepath.Separator)) {
		return 0, "", 0, fmt.Errorf("%w: %s names a directory; name a file", ErrRefused, path)
	}
	fi, err := os.Stat(path) // follows links, as opening it would
	switch {
	case errors.Is(err, fs.ErrNotExist):
		target, err := dangling(path)
		return replace, target, 0o644, err
	case err != nil:
		return 0, "", 0, err
	}
	switch mode := fi.Mode(); {
	case mode.IsRegular():
		target, err := filepath.EvalSymlinks(path)
		if err != nil {
			return 0, "", 0, err
		}
		// A link that resolves elsewhere than the file it opens (an open
		// descriptor's /proc link to a deleted file, say) cannot be
		// replaced by its name: write to it as it is.
		if tfi, err := os.Stat(target); err != nil || !os.SameFile(fi, tfi) {
			return direct, "", 0, nil
		}
		return replace, target, mode.Perm(), nil
	case mode.IsDir():
		return 0, "", 0, fmt.Errorf("%w: %s is a directory; name a file in it", ErrRefused, path)
	case mode&fs.ModeNamedPipe != 0, mode&fs.ModeCharDevice != 0:
		return direct, "", 0, nil
	case mode&fs.ModeDevice != 0:
		return 0, "", 0, fmt.Errorf("%w: %s is a block device: write to a file on a file system instead", ErrRefused, path)
	case mode&fs.ModeSocket != 0:
		return 0, "", 0, fmt.Errorf("%w: %s is a socket", ErrRefused, path)
	}
	return 0, "", 0, fmt.Errorf("%w: %s is not a regular file, FIFO or character device (%s)", ErrRefused, path, fi.Mode().Type())
}

// dangling follows the symbolic links of a path that does not resolve to
// an existing file, to the path a new file should be created at.
func dangling(path string) (string, error) {
	for range maxLinks {
		fi, err := os.Lstat(path)
		if errors.Is(err, fs.ErrNotExist) {
			return path, nil
		}
		if err != nil {
			return "", err
		}
		if fi.Mode()&fs.ModeSymlink == 0 {
			return path, nil
		}
		link, err := os.Readlink(path)
		if err != nil {
			return "", err
		}
		if !filepath.IsAbs(link) {
			link = filepath.Join(filepath.Dir(path), link)
		}
		path = link
	}
	return "", fmt.Errorf("%s: too many levels of symbolic links", path)
}

// Open opens path for writing as the package describes. Opening a FIFO
// waits for a reader; it and every later write to the FIFO or device stop
// with ctx's error when ctx ends.
func Open(ctx context.Context, path string) (*File, error) {
	k, target, mode, err := classify(path)
	if err != nil {
		return nil, err
	}
	if k == direct {
		f, err := openDirect(ctx, path)
		if err != nil {
			return nil, err
		}
		out := &File{File: f, path: path}
		out.stop = context.AfterFunc(ctx, func() { f.SetDeadline(time.Now()) })
		return out, nil
	}
	tmp, err := os.CreateTemp(filepath.Dir(target), "."+filepath.Base(target)+".imo-*")
	if err != nil {
		return nil, fmt.Errorf("creating %s: %w", path, err)
	}
	return &File{File: tmp, path: path, target: target, mode: mode, stop: func() bool { return true }}, nil
}

// PartialSuffix ends the name of the file a resumable output is written
// into, beside its target.
const PartialSuffix = ".partial"

// OpenPartial opens path as Open does, except that a replaced file is
// written into its target's name with PartialSuffix, opened as it is, not
// truncated: it holds what an earlier attempt wrote, for the caller to
// resume. Keep leaves it for a later attempt; Abort removes it.
func OpenPartial(ctx context.Context, path string) (*File, error) {
	k, target, mode, err := classify(path)
	if err != nil {
		return nil, err
	}
	if k == direct {
		return Open(ctx, path)
	}
	f, err := os.OpenFile(target+PartialSuffix, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("creating %s: %w", target+PartialSuffix, err)
	}
	return &File{File: f, path: path, target: target, mode: mode, stop: func() bool { return true }}, nil
}

// Keep gives the output up but keeps the file it was written into, for a
// later attempt to resume. After Commit it does nothing.
func (f *File) Keep() {
	if f.done {
		return
	}
	f.done = true
	f.stop()
	f.File.Close()
}

// Direct reports whether the output is written straight to what the path
// names, in order, rather than to a temporary file: WriteAt then fails.
func (f *File) Direct() bool { return f.target == "" }

// Name is the path the user gave.
func (f *File) Name() string { return f.path }

// Commit finishes the output: a replaced file gets its mode (that of the
// file it replaces, or 0644) and is renamed over its target. Like docker
// save and skopeo, it does not fsync: the rename is atomic against the
// process failing, and durability against power loss is left to the file
// system.
func (f *File) Commit() error {
	if f.done {
		return nil
	}
	f.done = true
	f.stop()
	if f.Direct() {
		if err := f.File.Close(); err != nil {
			return fmt.Errorf("writing %s: %w", f.path, err)
		}
		return nil
	}
	tmp := f.File.Name()
	err := f.File.Chmod(f.mode)
	if cerr := f.File.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, f.target)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("writing %s: %w", f.path, err)
	}
	return nil
}

// Abort gives the output up: a temporary file is removed and what the path
// named is left as it was. After Commit it does nothing.
func (f *File) Abort() {
	if f.done {
		return
	}
	f.done = true
	f.stop()
	f.File.Close()
	if !f.Direct() {
		os.Remove(f.File.Name())
	}
}
