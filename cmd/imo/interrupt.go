package main

import (
	"context"
	"errors"
	"fmt"
	"io"
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

// onSignals ends ctx (through cancel, with an [interrupted] cause) at
// SIGINT or SIGTERM. After the first signal, a second one ends imo at once
// (the signal's default action), and if the command has not returned
// within forceExitAfter imo restores its standard streams and exits by
// itself. stop releases the signals.
func onSignals(cancel context.CancelCauseFunc, stderr io.Writer, restore func()) (stop func()) {
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
				restore()
				os.Exit(cause.exitCode())
			}
		}
	}()
	return func() {
		close(done)
		signal.Stop(sigs)
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
