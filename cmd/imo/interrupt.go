package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/signal"
	"syscall"
	"time"

	"golang.org/x/term"
)

// forceExitAfter is how long imo waits, after SIGINT or SIGTERM, for the
// command to clean up and return before it exits regardless.
const forceExitAfter = 5 * time.Second

// interrupted is why a context ended when a signal stopped imo.
type interrupted struct{ sig syscall.Signal }

func (e interrupted) Error() string { return "interrupted by " + signalName(e.sig) }

// exitCode is the shell's convention for a process a signal stopped.
func (e interrupted) exitCode() int { return 128 + int(e.sig) }

func signalName(sig syscall.Signal) string {
	switch sig {
	case syscall.SIGINT:
		return "SIGINT"
	case syscall.SIGTERM:
		return "SIGTERM"
	}
	return sig.String()
}

// signalContext returns a context that SIGINT or SIGTERM ends, with an
// [interrupted] cause. After the first signal, a second one ends imo at
// once (the signal's default action), and if the command has not returned
// within forceExitAfter imo exits by itself. stop releases the signals.
func signalContext(stderr io.Writer) (ctx context.Context, stop func()) {
	ctx, cancel := context.WithCancelCause(context.Background())
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	done := make(chan struct{})
	go func() {
		select {
		case <-done:
			return
		case sig := <-sigs:
			signal.Stop(sigs)
			cause := interrupted{sig.(syscall.Signal)}
			cancel(cause)
			select {
			case <-done:
			case <-time.After(forceExitAfter):
				fmt.Fprintf(stderr, "imo: %v: not stopped after %s; exiting\n", cause, forceExitAfter)
				os.Exit(cause.exitCode())
			}
		}
	}()
	return ctx, func() {
		close(done)
		signal.Stop(sigs)
		cancel(nil)
	}
}

// interruptible returns f so that a read or write blocked on it ends when
// ctx does: a pipe, FIFO or socket is served through Go's poller with a
// deadline set when ctx ends. Other files (a terminal, a regular file) are
// returned as they are. restore puts the descriptor back into blocking
// mode, as the processes sharing it expect.
func interruptible(ctx context.Context, f *os.File) (rw *os.File, restore func()) {
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
	stop := context.AfterFunc(ctx, func() { nf.SetDeadline(time.Now()) })
	return nf, func() {
		stop()
		nf.Close()
		syscall.SetNonblock(fd, false)
	}
}

// stoppedBy reports the signal that stopped imo, if one did.
func stoppedBy(ctx context.Context) (interrupted, bool) {
	var intr interrupted
	return intr, ctx.Err() != nil && errors.As(context.Cause(ctx), &intr)
}

// isTerminal reports whether x is a terminal, without touching the
// blocking mode of its descriptor (as File.Fd would).
func isTerminal(x any) bool {
	f, ok := x.(*os.File)
	if !ok {
		return false
	}
	rc, err := f.SyscallConn()
	if err != nil {
		return false
	}
	tty := false
	rc.Control(func(fd uintptr) { tty = term.IsTerminal(int(fd)) })
	return tty
}
