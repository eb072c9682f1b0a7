package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/imokit/imo"
	"github.com/imokit/imo/archive"
	"github.com/imokit/imo/internal/outfile"
)

// reportVersion is the version of the push report's format.
const reportVersion = 1

// pushReport is the record push --report writes: what was pushed where,
// from which archive, and what became of every image and blob.
type pushReport struct {
	Version     int            `json:"imoPushReportVersion"`
	Started     time.Time      `json:"started"`
	Finished    time.Time      `json:"finished"`
	Archive     reportArchive  `json:"archive"`
	Destination string         `json:"destination"`
	Result      string         `json:"result"`
	Error       string         `json:"error,omitempty"`
	Images      []reportImage  `json:"images"`
	Blobs       []reportedBlob `json:"blobs"`
}

// reportArchive is the archive a push read.
type reportArchive struct {
	Path         string  `json:"path"`
	PlanDigest   v1.Hash `json:"planDigest,omitzero"`
	Signer       string  `json:"signer,omitempty"`
	Verification string  `json:"verification"`
}

// reportImage is what became of one image.
type reportImage struct {
	Image     string  `json:"image"`
	Reference string  `json:"reference,omitempty"`
	Digest    v1.Hash `json:"digest"`
	Result    string  `json:"result"`
	Error     string  `json:"error,omitempty"`
}

// reportedBlob is what push did with one blob in one repository.
type reportedBlob struct {
	Repository string  `json:"repository"`
	Digest     v1.Hash `json:"digest"`
	Size       int64   `json:"size"`
	Action     string  `json:"action"`
	From       string  `json:"from,omitempty"`
	At         string  `json:"at"`
	Seconds    float64 `json:"seconds,omitempty"`
}

// reportCollector records the blob events of a push for its report, and
// passes every event on.
type reportCollector struct {
	next    imo.Reporter
	mu      sync.Mutex
	started map[string]time.Time
	blobs   []reportedBlob
	// verifiedBy is the fingerprint of the key that verified the archive.
	verifiedBy string
}

// Report implements [imo.Reporter].
func (c *reportCollector) Report(e imo.Event) {
	if c.next != nil {
		c.next.Report(e)
	}
	now := time.Now().UTC()
	b := reportedBlob{Repository: e.Ref, Digest: e.Digest, Size: e.Size, At: now.Format(time.RFC3339Nano)}
	key := e.Ref + "@" + e.Digest.String()
	c.mu.Lock()
	defer c.mu.Unlock()
	switch e.Kind {
	case imo.BlobStarted:
		c.started[key] = now
		return
	case imo.BlobDone:
		b.Action, b.Seconds = "uploaded", now.Sub(c.started[key]).Seconds()
	case imo.BlobPresent:
		b.Action = "present"
	case imo.BlobMounted:
		b.Action, b.From = "mounted", e.From
	case imo.BlobRebuilt:
		b.Action = "rebuilt"
	case imo.ArchiveVerified:
		c.verifiedBy = e.Signer
		return
	default:
		return
	}
	c.blobs = append(c.blobs, b)
}

// reporting is a push whose report goes to path.
type reporting struct {
	path      string
	keys      bool // the push checks archives against keys
	report    pushReport
	collector *reportCollector
}

// newReporting starts the report of a push of the archive at archivePath
// to dst; set its collector's next to pass events on.
func newReporting(path, archivePath, dst string, keys bool) *reporting {
	return &reporting{path: path, keys: keys, collector: &reportCollector{started: map[string]time.Time{}},
		report: pushReport{Started: time.Now().UTC(), Archive: reportArchive{Path: archivePath}, Destination: dst}}
}

// write writes the report atomically, whatever became of the push (err),
// even when ctx is cancelled: a stopped push is reported too.
func (p *reporting) write(ctx context.Context, a *archive.Reader, results []imo.ImageResult, err error) error {
	ctx = context.WithoutCancel(ctx)
	r, keys, path := &p.report, p.keys, p.path
	r.Finished = time.Now().UTC()
	p.collector.mu.Lock()
	blobs, verifiedBy := slices.Clone(p.collector.blobs), p.collector.verifiedBy
	p.collector.mu.Unlock()
	r.Version, r.Result, r.Blobs, r.Images = reportVersion, "pushed", blobs, []reportImage{}
	if r.Blobs == nil {
		r.Blobs = []reportedBlob{}
	}
	if err != nil {
		r.Result, r.Error = "failed", err.Error()
	}
	if a != nil {
		r.Archive.PlanDigest, r.Archive.Signer = a.PlanDigest(), a.Signer()
	}
	switch {
	case keys && errors.Is(err, imo.ErrUntrusted):
		r.Archive.Verification = "refused: " + err.Error()
	case keys && verifiedBy != "":
		r.Archive.Signer, r.Archive.Verification = verifiedBy, "verified: signed by "+verifiedBy
	case keys:
		r.Archive.Verification = "not reached"
	case r.Archive.Signer != "":
		r.Archive.Verification = "not checked: no key given"
	default:
		r.Archive.Verification = "unsigned"
	}
	for _, res := range results {
		img := reportImage{Image: res.Image, Reference: res.Place(), Digest: res.Digest, Result: "pushed"}
		if res.Err != nil {
			img.Result, img.Error = "failed", res.Err.Error()
		}
		r.Images = append(r.Images, img)
	}
	out, oerr := outfile.Open(ctx, path)
	if oerr != nil {
		return fmt.Errorf("--report: %w", oerr)
	}
	defer out.Abort()
	enc := json.NewEncoder(out)
	enc.SetIndent("", "  ")
	if err := enc.Encode(r); err != nil {
		return fmt.Errorf("--report: writing %s: %w", path, err)
	}
	return out.Commit()
}
