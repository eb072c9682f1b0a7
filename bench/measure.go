package main

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"syscall"
	"time"
)

// sample is one measured run of a tool.
type sample struct {
	elapsed time.Duration
	maxRSS  int64 // bytes
	written int64 // bytes the process caused to be written to disk
}

// measure runs cmd to completion and reads its resource usage.
func measure(cmd *exec.Cmd) (sample, error) {
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if cmd.Stdout == nil {
		cmd.Stdout = &stderr
	}
	start := time.Now()
	err := cmd.Run()
	elapsed := time.Since(start)
	if err != nil {
		return sample{}, fmt.Errorf("%s: %v\n%s", cmd, err, stderr.String())
	}
	ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage)
	if !ok {
		return sample{}, fmt.Errorf("%s: no resource usage", cmd)
	}
	// ru_maxrss is in KiB; ru_oublock counts 512-byte blocks, charged when
	// pages are dirtied, temporary files included.
	return sample{elapsed: elapsed, maxRSS: ru.Maxrss * 1024, written: ru.Oublock * 512}, nil
}

// stats are the medians of several samples.
type stats struct {
	elapsed time.Duration
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
