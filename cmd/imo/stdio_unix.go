//go:build unix

package main

import (
	"context"
	"io/fs"
	"os"
	"syscall"
	"time"
)

// stdio returns the standard streams so that a read or write blocked on a
// pipe, FIFO or socket ends when ctx does: standard input and output are
// served through Go's poller, with a deadline set when ctx ends. Standard
// error is served through the poller too when it is a pipe or socket (it
// may share standard output's, which the poller makes non-blocking), but
// keeps no deadline, so that imo can still say why it stopped. restore
// puts the descriptors back into blocking mode, as the processes sharing
// them expect.
func stdio(ctx context.Context) (stdin, stdout, stderr *os.File, restore func()) {
	stdin, r1 := pollable(os.Stdin)
	stdout, r2 := pollable(os.Stdout)
	stderr, r3 := pollable(os.Stderr)
	for _, f := range []*os.File{stdin, stdout} {
		context.AfterFunc(ctx, func() { f.SetDeadline(time.Now()) })
	}
	return stdin, stdout, stderr, func() { r3(); r2(); r1() }
}

// pollable returns f served through Go's poller when it is a pipe, FIFO
// or socket (a non-blocking duplicate of its descriptor), and f itself
// otherwise (a terminal, a regular file).
func pollable(f *os.File) (*os.File, func()) {
	fi, err := f.Stat()
	if err != nil || fi.Mode()&(fs.ModeNamedPipe|fs.ModeSocket) == 0 {
		return f, func() {}
	}
	fd := int(f.Fd())
	dup, err := syscall.Dup(fd)
	if err != nil {
		return f, func() {}
	}
	syscall.CloseOnExec(dup)
	if err := syscall.SetNonblock(dup, true); err != nil {
		syscall.Close(dup)
		return f, func() {}
	}
	nf := os.NewFile(uintptr(dup), f.Name())
	return nf, func() { syscall.SetNonblock(fd, false) }
}
