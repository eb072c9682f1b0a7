package imo

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/schollz/progressbar/v3"
	"golang.org/x/term"
)

// EventKind says what an [Event] reports.
type EventKind int

// The kinds of [Event].
const (
	// ImageResolved: Ref was resolved to Digest, a manifest of MediaType and Size bytes.
	ImageResolved EventKind = iota + 1
	// BlobSkipped: the blob is not transferred; Reason says why.
	BlobSkipped
	// BlobStarted: the transfer of a blob of Size bytes begins.
	BlobStarted
	// BlobProgress: Complete of Size bytes of a blob have been transferred.
	BlobProgress
	// BlobDone: all Size bytes of a blob were transferred and verified.
	BlobDone
	// ManifestPushed: a manifest was written to Ref.
	ManifestPushed
	// BlobRebuilt: a layer of Size bytes was rebuilt from its sub-layer
	// delta and verified, before its upload; Reason tells the base layer
	// contents spooled to disk for it.
	BlobRebuilt
	// TransferPlanned: Size bytes of blobs are about to be transferred in
	// all, by a pull or a push; the blobs' progress adds up to it.
	TransferPlanned
	// RepositoryListed: an inventory has listed what the repository Ref
	// holds, the Complete-th of Size repositories.
	RepositoryListed
	// BlobPresent: the destination repository Ref already holds the blob:
	// push sends nothing.
	BlobPresent
	// BlobMounted: push mounted the blob into the repository Ref from the
	// repository From of the same registry, sending no byte.
	BlobMounted
	// ArchiveVerified: the archive Ref, whose plan is Digest, verified
	// against the keys of WithVerifyKeys: the key Signer signed it and
	// every entry is what its plan names.
	ArchiveVerified
	// PullResumed: a pull to the file Ref takes up where an interrupted
	// one stopped: that one wrote Complete of the Size bytes of blobs,
	// which are checked and kept rather than fetched.
	PullResumed
	// PartialDiscarded: the partial file Ref an interrupted pull left is
	// not used, and is written over; Reason says why (the images changed,
	// a fresh start was asked for).
	PartialDiscarded
)

var kindNames = map[EventKind]string{
	ImageResolved:    "image-resolved",
	BlobSkipped:      "blob-skipped",
	BlobStarted:      "blob-started",
	BlobProgress:     "blob-progress",
	BlobDone:         "blob-done",
	ManifestPushed:   "manifest-pushed",
	BlobRebuilt:      "blob-rebuilt",
	TransferPlanned:  "transfer-planned",
	RepositoryListed: "repository-listed",
	BlobPresent:      "blob-present",
	BlobMounted:      "blob-mounted",
	ArchiveVerified:  "archive-verified",
	PullResumed:      "pull-resumed",
	PartialDiscarded: "partial-discarded",
}

// String returns the kind's name, such as "blob-done".
func (k EventKind) String() string {
	if s, ok := kindNames[k]; ok {
		return s
	}
	return fmt.Sprintf("EventKind(%d)", int(k))
}

// MarshalText encodes the kind as its name, for JSON event streams.
func (k EventKind) MarshalText() ([]byte, error) { return []byte(k.String()), nil }

// Event is one thing that happened during a pull, vet or push. Events carry
// references, digests and sizes, never credentials.
type Event struct {
	Kind EventKind `json:"kind"`
	// Ref is the image reference or repository the event concerns.
	Ref string `json:"ref,omitempty"`
	// Digest, MediaType and Size describe the blob or manifest.
	Digest    v1.Hash         `json:"digest"`
	MediaType types.MediaType `json:"mediaType,omitempty"`
	Size      int64           `json:"size"`
	// Complete is how many bytes of the blob have been transferred.
	Complete int64 `json:"complete,omitempty"`
	// Reason says why a blob was skipped.
	Reason string `json:"reason,omitempty"`
	// From is the repository a mounted blob came from.
	From string `json:"from,omitempty"`
	// Signer is the fingerprint of the key that signed a verified archive.
	Signer string `json:"signer,omitempty"`
}

// String describes the event in one line.
func (e Event) String() string {
	switch e.Kind {
	case ImageResolved:
		return fmt.Sprintf("resolved %s to %s", e.Ref, e.Digest)
	case BlobSkipped:
		return fmt.Sprintf("skipped %s (%d bytes): %s", e.Digest, e.Size, e.Reason)
	case BlobStarted:
		return fmt.Sprintf("copying %s (%d bytes)", e.Digest, e.Size)
	case BlobProgress:
		return fmt.Sprintf("copying %s: %d of %d bytes", e.Digest, e.Complete, e.Size)
	case BlobDone:
		return fmt.Sprintf("copied %s (%d bytes)", e.Digest, e.Size)
	case ManifestPushed:
		return fmt.Sprintf("pushed manifest %s to %s", e.Digest, e.Ref)
	case BlobRebuilt:
		return fmt.Sprintf("rebuilt %s (%d bytes) %s", e.Digest, e.Size, e.Reason)
	case TransferPlanned:
		return fmt.Sprintf("transferring %d bytes of blobs", e.Size)
	case RepositoryListed:
		return fmt.Sprintf("listed %s (%d of %d repositories)", e.Ref, e.Complete, e.Size)
	case BlobPresent:
		return fmt.Sprintf("skipped %s (%d bytes): %s has it", e.Digest, e.Size, e.Ref)
	case BlobMounted:
		return fmt.Sprintf("mounted %s (%d bytes) into %s from %s", e.Digest, e.Size, e.Ref, e.From)
	case ArchiveVerified:
		return fmt.Sprintf("verified %s: signed by the key %s", e.Ref, e.Signer)
	case PullResumed:
		return fmt.Sprintf("resuming %s: %d of %d bytes of blobs were written, and are checked rather than fetched", e.Ref, e.Complete, e.Size)
	case PartialDiscarded:
		return fmt.Sprintf("not resuming %s: %s; starting afresh", e.Ref, e.Reason)
	}
	return e.Kind.String()
}

// Reporter receives the events of imo's operations. Implementations must be
// safe for concurrent use: blobs move in parallel. Report must not block
// for long; it runs on the transfer's goroutine.
type Reporter interface {
	Report(Event)
}

// ReporterFunc adapts a function to a [Reporter].
type ReporterFunc func(Event)

// Report calls f(e).
func (f ReporterFunc) Report(e Event) { f(e) }

type nopReporter struct{}

func (nopReporter) Report(Event) {}

// newWriterReporter renders events for people on w: with
// [NewBarReporter] when w is a terminal, [NewLineReporter] otherwise.
func newWriterReporter(w io.Writer) Reporter {
	if f, ok := w.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		return NewBarReporter(w)
	}
	return NewLineReporter(w)
}

// NewBarReporter draws on w one progress bar for all the bytes in flight,
// and a line for each event that is not about bytes.
func NewBarReporter(w io.Writer) Reporter {
	return &barReporter{w: w, seen: map[v1.Hash]int64{}}
}

// NewLineReporter writes one line per event on w, leaving out
// [BlobProgress] and [RepositoryListed] events.
func NewLineReporter(w io.Writer) Reporter {
	return &lineReporter{w: w}
}

// NewJSONReporter writes every event except [BlobProgress] to w as one
// line of JSON, for CI logs and programs.
func NewJSONReporter(w io.Writer) Reporter {
	return &jsonReporter{enc: json.NewEncoder(w)}
}

type jsonReporter struct {
	mu  sync.Mutex
	enc *json.Encoder
}

func (r *jsonReporter) Report(e Event) {
	if e.Kind == BlobProgress {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	_ = r.enc.Encode(e)
}

// lineReporter writes one line per event.
type lineReporter struct {
	mu sync.Mutex
	w  io.Writer
}

func (r *lineReporter) Report(e Event) {
	if e.Kind == BlobProgress || e.Kind == RepositoryListed {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	fmt.Fprintln(r.w, e.String())
}

// barReporter draws one progress bar for the bytes of a transfer, whose
// total is the planned one (or, without a plan, grows as blobs start), and
// one for the repositories of an inventory.
type barReporter struct {
	mu      sync.Mutex
	w       io.Writer
	bar     *progressbar.ProgressBar
	planned bool
	repos   *progressbar.ProgressBar
	seen    map[v1.Hash]int64 // bytes counted so far per blob in flight
}

func (r *barReporter) newBar(total int64, what string, bytes bool) *progressbar.ProgressBar {
	return progressbar.NewOptions64(total,
		progressbar.OptionSetWriter(r.w),
		progressbar.OptionShowBytes(bytes),
		progressbar.OptionShowCount(),
		progressbar.OptionSetDescription(what),
		progressbar.OptionThrottle(100*time.Millisecond),
		progressbar.OptionClearOnFinish(),
	)
}

func (r *barReporter) Report(e Event) {
	r.mu.Lock()
	defer r.mu.Unlock()
	switch e.Kind {
	case TransferPlanned:
		r.bar, r.planned = r.newBar(e.Size, "blobs", true), true
		clear(r.seen)
		if e.Size == 0 {
			_ = r.bar.Finish()
		}
	case BlobStarted:
		if r.bar == nil {
			r.bar = r.newBar(0, "blobs", true)
		}
		if !r.planned {
			r.bar.ChangeMax64(r.bar.GetMax64() + e.Size)
		}
		r.seen[e.Digest] = 0
	case BlobProgress, BlobDone:
		if r.bar == nil {
			return
		}
		complete := e.Complete
		if e.Kind == BlobDone {
			complete = e.Size
		}
		_ = r.bar.Add64(complete - r.seen[e.Digest])
		r.seen[e.Digest] = complete
		if e.Kind == BlobDone {
			delete(r.seen, e.Digest)
		}
	case RepositoryListed:
		if r.repos == nil {
			r.repos = r.newBar(e.Size, "repositories", false)
		}
		_ = r.repos.Set64(e.Complete)
	default:
		if r.bar != nil {
			_ = r.bar.Clear()
		}
		fmt.Fprintln(r.w, e.String())
	}
}
