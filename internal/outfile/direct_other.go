//go:build !unix

package outfile

import (
	"context"
	"fmt"
	"os"
)

// openDirect opens a device for writing as it is.
func openDirect(_ context.Context, path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return nil, fmt.Errorf("opening %s: %w", path, err)
	}
	return f, nil
}
