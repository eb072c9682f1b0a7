//go:build linux

package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestMain lets the tests run this test binary as the imo command, in a
// child process they can send signals to.
func TestMain(m *testing.M) {
	if os.Getenv("IMO_TEST_RUN_MAIN") == "1" {
		main()
		return
	}
	os.Exit(m.Run())
}

// child is a running imo process and what it printed on stderr.
type child struct {
	cmd    *exec.Cmd
	stderr *bytes.Buffer
	done   chan error
}

// startImo starts imo with args in a child process; stdin and stdout are
// the child's, when not nil.
func startImo(t *testing.T, stdin io.Reader, stdout io.Writer, args ...string) *child {
	t.Helper()
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = append(os.Environ(), "IMO_TEST_RUN_MAIN=1")
	cmd.Stdin, cmd.Stdout = stdin, stdout
	c := &child{cmd: cmd, stderr: &bytes.Buffer{}, done: make(chan error, 1)}
	cmd.Stderr = c.stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { c.done <- cmd.Wait() }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-c.done
	})
	return c
}

// startImoShared starts imo with standard output and error both on w.
func startImoShared(t *testing.T, w *os.File, args ...string) *child {
	t.Helper()
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = append(os.Environ(), "IMO_TEST_RUN_MAIN=1")
	cmd.Stdout, cmd.Stderr = w, w
	c := &child{cmd: cmd, stderr: &bytes.Buffer{}, done: make(chan error, 1)}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { c.done <- cmd.Wait() }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-c.done
	})
	return c
}

// stop sends sig and waits for the child to exit; it fails the test if the
// child is still running after ten seconds.
func (c *child) stop(t *testing.T, sig syscall.Signal) int {
	t.Helper()
	if err := c.cmd.Process.Signal(sig); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-c.done:
		c.done <- err // for Cleanup
		var exit *exec.ExitError
		if errors.As(err, &exit) {
			return exit.ExitCode()
		}
		return 0
	case <-time.After(10 * time.Second):
		t.Fatalf("imo still runs 10s after %v; stderr:\n%s", sig, c.stderr)
	}
	return -1
}

// waitFor polls until ok or fails the test after ten seconds.
func waitFor(t *testing.T, what string, ok func() bool) {
	t.Helper()
	for start := time.Now(); !ok(); time.Sleep(20 * time.Millisecond) {
		if time.Since(start) > 10*time.Second {
			t.Fatalf("waited 10s for %s", what)
		}
	}
}

// TestSignalsStopBlockedIO sends SIGINT and SIGTERM to imo while it is
// blocked on a pipe or a FIFO, and checks that it stops at once, cleans up
// and exits with the shell's status for the signal.
func TestSignalsStopBlockedIO(t *testing.T) {
	t.Parallel()
	src, site, _ := registries(t, nil, nil)
	for _, sig := range []syscall.Signal{syscall.SIGINT, syscall.SIGTERM} {
		want := 128 + int(sig)
		t.Run("push - "+signalName(sig), func(t *testing.T) {
			// (head -c 1000000 big.tar; sleep) | imo push -
			pr, pw, err := os.Pipe()
			if err != nil {
				t.Fatal(err)
			}
			defer pw.Close()
			spool := t.TempDir()
			c := startImo(t, pr, nil, "push", "--plain-http", "-q", "--temp-dir", spool, "-", site.Ref("x:v1"))
			pr.Close()
			// The write returns once imo has read all but what the pipe
			// holds: imo is then waiting for more.
			written := make(chan error, 1)
			go func() {
				_, err := pw.Write(make([]byte, 1_000_000))
				written <- err
			}()
			select {
			case err := <-written:
				if err != nil {
					t.Fatal(err)
				}
			case <-time.After(10 * time.Second):
				t.Fatalf("imo did not read its standard input; stderr:\n%s", c.stderr)
			}
			site.ResetCounts()
			if code := c.stop(t, sig); code != want || !strings.Contains(c.stderr.String(), "stopped: interrupted by "+signalName(sig)) {
				t.Errorf("imo push - stopped by %v: exit %d, want %d; stderr:\n%s", sig, code, want, c.stderr)
			}
			if strings.Contains(c.stderr.String(), "not stopped after") {
				t.Errorf("imo needed its last-resort exit:\n%s", c.stderr)
			}
			if entries, _ := os.ReadDir(spool); len(entries) != 0 {
				t.Errorf("imo left its spool file behind")
			}
			if n := requests(site); n != 0 {
				t.Errorf("an interrupted push sent %d requests", n)
			}
		})

		t.Run("pull -o - "+signalName(sig), func(t *testing.T) {
			// imo pull -o - | sleep: a reader that never reads.
			pr, pw, err := os.Pipe()
			if err != nil {
				t.Fatal(err)
			}
			defer pr.Close()
			if _, err := fcntl(pw, syscall.F_SETPIPE_SZ, 4096); err != nil {
				t.Fatal(err)
			}
			src.ResetCounts()
			c := startImo(t, nil, pw, "pull", "--plain-http", "-q", "scratch", src.Ref("app:v2"), "-o", "-")
			pw.Close()
			waitFor(t, "imo to resolve the image", func() bool { return src.Count("GET", "/manifests/") > 0 })
			time.Sleep(300 * time.Millisecond) // the archive's first 4 KiB fill the pipe
			if code := c.stop(t, sig); code != want || !strings.Contains(c.stderr.String(), "stopped: interrupted by "+signalName(sig)) {
				t.Errorf("imo pull -o - stopped by %v: exit %d, want %d; stderr:\n%s", sig, code, want, c.stderr)
			}
			if strings.Contains(c.stderr.String(), "not stopped after") {
				t.Errorf("imo needed its last-resort exit:\n%s", c.stderr)
			}
		})
	}

	t.Run("pull -o FIFO", func(t *testing.T) {
		fifo := filepath.Join(t.TempDir(), "fifo")
		if err := syscall.Mkfifo(fifo, 0o600); err != nil {
			t.Fatal(err)
		}
		c := startImo(t, nil, nil, "pull", "--plain-http", "-q", "scratch", src.Ref("app:v2"), "-o", fifo)
		time.Sleep(300 * time.Millisecond) // waiting for a reader that never comes
		if code := c.stop(t, syscall.SIGINT); code != 130 {
			t.Errorf("imo pull -o FIFO stopped by SIGINT: exit %d, want 130; stderr:\n%s", code, c.stderr)
		}
	})
}

// fcntl sets a descriptor's option.
func fcntl(f *os.File, cmd, arg int) (int, error) {
	r, _, errno := syscall.Syscall(syscall.SYS_FCNTL, f.Fd(), uintptr(cmd), uintptr(arg))
	if errno != 0 {
		return 0, errno
	}
	return int(r), nil
}

// TestSharedPipeKeepsStderr runs imo with standard output and error on one
// pipe (2>&1 | slow-reader), which imo makes non-blocking to stop on
// signals: no line of stderr may be lost while the reader is slow.
func TestSharedPipeKeepsStderr(t *testing.T) {
	src, _, pair := registries(t, nil, nil)
	// A bundle of 30 images: more progress than the pipe holds.
	var pairs strings.Builder
	for k := range 30 {
		ref := src.Ref(fmt.Sprintf("app%d:v2", k))
		if err := src.Write(context.Background(), ref, pair.V2); err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&pairs, "scratch %s\n", ref)
	}
	from := filepath.Join(t.TempDir(), "pairs.txt")
	if err := os.WriteFile(from, []byte(pairs.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	args := func(out string) []string {
		return []string{"pull", "--plain-http", "--progress", "json", "--from", from, "-o", out}
	}
	c := startImo(t, nil, nil, args(filepath.Join(t.TempDir(), "a.tar"))...)
	if err := <-c.done; err != nil {
		t.Fatalf("imo pull: %v\n%s", err, c.stderr)
	}
	c.done <- nil
	want := strings.Count(c.stderr.String(), "\n")
	if c.stderr.Len() < 8192 {
		t.Fatalf("the pull printed %d bytes of progress, too few to fill the pipe", c.stderr.Len())
	}

	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer pr.Close()
	if _, err := fcntl(pw, syscall.F_SETPIPE_SZ, 4096); err != nil {
		t.Fatal(err)
	}
	c = startImoShared(t, pw, args(filepath.Join(t.TempDir(), "a.tar"))...)
	pw.Close()
	time.Sleep(time.Second) // a slow reader: the pipe fills
	got, _ := io.ReadAll(pr)
	if err := <-c.done; err != nil {
		t.Errorf("imo pull 2>&1 | slow: %v", err)
	}
	c.done <- nil
	if n := strings.Count(string(got), "\n"); n != want+1 { // + the archive's path on stdout
		t.Errorf("imo pull 2>&1 | slow printed %d lines, want %d:\n%s", n, want+1, got)
	}
}
