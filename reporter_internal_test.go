package imo

import (
	"context"
	"io"
	"sync"
	"testing"

	"github.com/imokit/imo/internal/sandbox"
)

// TestBarTotalIsPlanned checks that the progress bar's total is the
// transfer's, known before the first byte, and that the bar ends full.
func TestBarTotalIsPlanned(t *testing.T) {
	t.Parallel()
	src := sandbox.NewRegistry(nil, nil)
	defer src.Close()
	pair, err := sandbox.NewAppPair(sandbox.Docker, "linux/amd64", "linux/arm64")
	if err != nil {
		t.Fatal(err)
	}
	if err := src.Write(context.Background(), src.Ref("app:v2"), pair.V2); err != nil {
		t.Fatal(err)
	}
	bar := NewBarReporter(io.Discard).(*barReporter)
	var mu sync.Mutex // Report runs on the transfer's goroutines
	var maxes []int64
	check := ReporterFunc(func(e Event) {
		mu.Lock()
		defer mu.Unlock()
		bar.Report(e)
		if bar.bar != nil {
			maxes = append(maxes, bar.bar.GetMax64())
		}
	})
	rc, err := New(WithPlainHTTP(), WithReporter(check)).Pull(context.Background(), Scratch, src.Ref("app:v2"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(io.Discard, rc); err != nil {
		t.Fatal(err)
	}
	rc.Close()
	if len(maxes) == 0 {
		t.Fatal("no bar was drawn")
	}
	for _, m := range maxes {
		if m != maxes[0] {
			t.Fatalf("the bar's total changed during the pull: %v", maxes)
		}
	}
	if state := bar.bar.State(); state.CurrentNum != maxes[0] || !bar.bar.IsFinished() {
		t.Errorf("the bar ended at %d of %d bytes (finished: %v)", state.CurrentNum, maxes[0], bar.bar.IsFinished())
	}
}
