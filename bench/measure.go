package main

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strings"
	"time"
)

// sample is one measured run of a tool.
type sample struct {
	elapsed time.Duration
	cpu     time.Duration // user and system CPU time
	maxRSS  int64         // bytes
	written int64         // bytes the process caused to be written to disk
}

// gnuTime is GNU time (Debian package time). The benchmark reads a tool's
// peak RSS and disk writes through it rather than from its own wait4: a
// process that Go starts begins with its parent's peak RSS (the child
// shares the parent's memory until it execs), which would report the
// benchmark's own size for every tool.
const gnuTime = "/usr/bin/time"

// measure runs cmd to completion under GNU time and reads its resource usage.
func measure(cmd *exec.Cmd) (sample, error) {
	report, err := os.CreateTemp("", "imo-bench-time-")
	if err != nil {
		return sample{}, err
	}
	report.Close()
	defer os.Remove(report.Name())
	timed := exec.Command(gnuTime, append([]string{"-f", "%M %O %U %S", "-o", report.Name(), cmd.Path}, cmd.Args[1:]...)...)
	timed.Env, timed.Dir, timed.Stdout = cmd.Env, cmd.Dir, cmd.Stdout
	var stderr bytes.Buffer
	timed.Stderr = &stderr
	if timed.Stdout == nil {
		timed.Stdout = &stderr
	}
	start := time.Now()
	err = timed.Run()
	elapsed := time.Since(start)
	if err != nil {
		return sample{}, fmt.Errorf("%s: %v\n%s", cmd, err, stderr.String())
	}
	out, err := os.ReadFile(report.Name())
	if err != nil {
		return sample{}, err
	}
	// %M is the peak RSS in KiB; %O counts 512-byte blocks written, charged
	// when pages are dirtied, temporary files included.
	// %U and %S are user and system CPU seconds.
	var rssKiB, blocks int64
	var user, sys float64
	if _, err := fmt.Sscanf(strings.TrimSpace(string(out)), "%d %d %f %f", &rssKiB, &blocks, &user, &sys); err != nil {
		return sample{}, fmt.Errorf("reading %s's report %q: %w", gnuTime, out, err)
	}
	cpu := time.Duration((user + sys) * float64(time.Second))
	return sample{elapsed: elapsed, cpu: cpu, maxRSS: rssKiB * 1024, written: blocks * 512}, nil
}

// stats are the medians of several samples.
type stats struct {
	elapsed time.Duration
	cpu     time.Duration
	maxRSS  int64
	written int64
	n       int
}

func median(samples []sample) stats {
	if len(samples) == 0 {
		return stats{}
	}
	pick := func(f func(sample) int64) int64 {
		v := make([]int64, len(samples))
		for i, s := range samples {
			v[i] = f(s)
		}
		slices.Sort(v)
		return v[len(v)/2]
	}
	return stats{
		elapsed: time.Duration(pick(func(s sample) int64 { return int64(s.elapsed) })),
		cpu:     time.Duration(pick(func(s sample) int64 { return int64(s.cpu) })),
		maxRSS:  pick(func(s sample) int64 { return s.maxRSS }),
		written: pick(func(s sample) int64 { return s.written }),
		n:       len(samples),
	}
}

func fileSize(path string) int64 {
	fi, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return fi.Size()
}

func mib(b int64) string { return fmt.Sprintf("%.1f", float64(b)/(1<<20)) }
