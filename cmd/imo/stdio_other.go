//go:build !unix

package main

import (
	"context"
	"os"
)

// stdio returns the standard streams as they are: on this system a read
// or write blocked on a pipe ends only with the process.
func stdio(context.Context) (stdin, stdout, stderr *os.File, restore func()) {
	return os.Stdin, os.Stdout, os.Stderr, func() {}
}
