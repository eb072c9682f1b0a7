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
	ctx, cancel := context.WithCancelCause(context.Background())
	stdin, stdout, stderr, restore := stdio(ctx)
	stop := onSignals(cancel, stderr, restore)
	code := run(ctx, os.Args[1:], stdin, stdout, stderr)
	stop()
	cancel(nil)
	restore()
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
