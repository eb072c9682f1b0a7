// Command imo moves container images into places the internet does not
// reach, carrying only what changed. It is a thin layer over the imo
// library: see "imo help".
package main

import (
	"context"
	"fmt"
	"io"
	"os"
)

func main() {
	ctx, stop := signalContext(os.Stderr)
	stdin, restoreIn := interruptible(ctx, os.Stdin)
	stdout, restoreOut := interruptible(ctx, os.Stdout)
	code := run(ctx, os.Args[1:], stdin, stdout, os.Stderr)
	restoreOut()
	restoreIn()
	stop()
	os.Exit(code)
}

// run executes the imo command line args and returns the exit status.
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	cmd := newRootCmd()
	cmd.SetArgs(args)
	cmd.SetIn(stdin)
	cmd.SetOut(stdout)
	cmd.SetErr(stderr)
	err := cmd.ExecuteContext(ctx)
	if err == nil {
		return exitOK
	}
	if intr, ok := stoppedBy(ctx); ok {
		fmt.Fprintf(stderr, "imo: stopped: %v\n", intr)
		return intr.exitCode()
	}
	return report(stderr, cmd, err)
}
