//go:build unix

package outfile

import (
	"context"
	"errors"
	"fmt"
	"os"
	"syscall"
	"time"
)

// openDirect opens a FIFO or device for writing without blocking the
// process: a FIFO with no reader yet is tried again until one comes or ctx
// ends. A FIFO's descriptor stays non-blocking, so that Go's poller serves
// it and a deadline interrupts a write that waits for the reader; a
// device's is made blocking again, as device drivers expect.
func openDirect(ctx context.Context, path string) (*os.File, error) {
	for {
		fd, err := syscall.Open(path, syscall.O_WRONLY|syscall.O_NONBLOCK|syscall.O_CLOEXEC, 0)
		if err == nil {
			var st syscall.Stat_t
			if err := syscall.Fstat(fd, &st); err != nil || st.Mode&syscall.S_IFMT != syscall.S_IFIFO {
				if err := syscall.SetNonblock(fd, false); err != nil {
					syscall.Close(fd)
					return nil, fmt.Errorf("opening %s: %w", path, err)
				}
			}
			return os.NewFile(uintptr(fd), path), nil
		}
		if !errors.Is(err, syscall.ENXIO) { // ENXIO: a FIFO with no reader
			return nil, fmt.Errorf("opening %s: %w", path, err)
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("opening %s: waiting for a reader: %w", path, context.Cause(ctx))
		case <-time.After(50 * time.Millisecond):
		}
	}
}
