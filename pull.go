package imo

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"sync"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/imokit/imo/archive"
	"github.com/imokit/imo/internal/graph"
	"github.com/imokit/imo/internal/outfile"
	"github.com/imokit/imo/internal/registry"
	"github.com/imokit/imo/volume"
)

// Pull resolves base and final and returns a stream of the archive that
// carries everything final needs that base lacks: every manifest and config
// of final, and each layer that no platform of base has. base may be
// [Scratch] for the whole image.
//
// Pull returns once both images are resolved (manifests only: no layer of
// base is ever downloaded). Blob bytes then flow from the registry to the
// reader as it reads, verified against their digests; nothing is staged in
// memory or on disk. A failure after Pull returns (a lost connection, a
// digest mismatch, ctx cancelled) is returned by Read, never a silently
// short archive. The caller must Close the stream; closing early stops the
// transfer and waits for its goroutines to end.
func (i *Incremental) Pull(ctx context.Context, base, final string) (io.ReadCloser, error) {
	d, err := i.Resolve(ctx, Pair{Base: base, Final: final})
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(ctx)
	pr, pw := io.Pipe()
	s := &pullStream{PipeReader: pr, cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(s.done)
		defer d.Close()
		s.err = d.WriteTo(ctx, pw)
		pw.CloseWithError(s.err)
	}()
	return s, nil
}

// pullStream is the archive stream Pull returns.
type pullStream struct {
	*io.PipeReader
	cancel context.CancelFunc
	done   chan struct{}
	err    error
}

// Close stops the transfer if it is still running and waits for it to end.
// It returns the transfer's error, unless the error only says that the
// caller stopped reading.
func (s *pullStream) Close() error {
	s.PipeReader.Close()
	s.cancel()
	<-s.done
	if errors.Is(s.err, io.ErrClosedPipe) || errors.Is(s.err, context.Canceled) {
		return nil
	}
	return s.err
}

// Difference is a resolved pull: what the archive carries and leaves out,
// and where each blob comes from. [Incremental.Resolve] makes one; it can
// be written any number of times, to a stream or a file. Close it when
// done: with [WithSublayerDeltas] it holds temporary files.
type Difference struct {
	i      *Incremental
	plan   *archive.Plan
	images []pulledImage
	all    *graph.Graph    // every manifest and blob of the images, once each
	source map[v1.Hash]int // which image's repository serves each blob
	// Files the pull already holds (see sublayer.go): whole blobs
	// downloaded to try a delta, and the deltas themselves.
	local  map[v1.Hash]archive.File
	deltas map[v1.Hash]archive.File
	tmp    string // the directory holding them, removed by Close
}

// pulledImage is one final image of a pull, or an artifact referring to
// one, or a base.
type pulledImage struct {
	ref     name.Reference
	graph   *graph.Graph
	repo    *registry.Repository
	subject v1.Hash      // for an artifact, the manifest it refers to
	base    *pulledImage // for a final image, its base; nil for scratch and artifacts
}

// Plan is what the archive carries and leaves out, and why: the archive's
// imo.json.
func (d *Difference) Plan() *archive.Plan { return d.plan }

// Close removes the files the pull made and drops idle connections.
func (d *Difference) Close() error {
	d.i.closeIdle()
	if d.tmp != "" {
		return os.RemoveAll(d.tmp)
	}
	return nil
}

// WriteTo writes the archive to w, in order, as [Incremental.Pull] streams
// it: up to [WithJobs] blobs download and are verified at once, each into
// a bounded window, while w receives them one after the other.
func (d *Difference) WriteTo(ctx context.Context, w io.Writer) error {
	l, err := d.layout()
	if err != nil {
		return err
	}
	return l.WriteTo(ctx, w, d.fetch, d.i.opts.jobs)
}

// WriteFile writes the same archive, byte for byte, to the file at path.
// It fetches up to [WithJobs] blobs at once, each straight into its place:
// the bytes written equal the archive's size and memory does not grow with
// the image.
//
// A regular file (or a path that does not exist yet) appears complete or
// not at all: imo writes a temporary file beside it and renames it over
// path; on any failure, ctx cancelled included, it removes the temporary
// file and leaves path as it was. A symbolic link is followed and its
// target replaced that way; the link stays. A FIFO or a character device
// is written straight to, in order, as WriteTo writes, and never replaced.
// A directory, a block device or a socket is refused before anything is
// fetched. Like docker save and skopeo, imo does not fsync: the rename is
// atomic against the process failing, and durability against power loss
// is left to the file system. A new file gets mode 0644; a replaced one
// keeps its mode.
func (d *Difference) WriteFile(ctx context.Context, path string) error {
	out, err := outfile.Open(ctx, path)
	if err != nil {
		return err
	}
	defer out.Abort()
	l, err := d.layout()
	if err != nil {
		return err
	}
	if out.Direct() {
		err = l.WriteTo(ctx, out, d.fetch, d.i.opts.jobs)
	} else {
		err = l.WriteAt(ctx, out, d.fetch, d.i.opts.jobs)
	}
	if err != nil {
		return err
	}
	return out.Commit()
}

// WriteVolumes writes the archive as a volume set beside out (see
// [volume.Names]): volumes of at most size bytes, each of which stands
// alone, and parity parity volumes, so that any parity volumes of the set
// may be lost or damaged. The volumes appear under their names only when
// the whole set is written; it returns their paths, data volumes first.
func (d *Difference) WriteVolumes(ctx context.Context, out string, size int64, parity int) ([]string, error) {
	l, err := d.layout()
	if err != nil {
		return nil, err
	}
	w, err := volume.Create(l, out, size, parity)
	if err != nil {
		return nil, err
	}
	if err := l.WriteAt(ctx, w, d.fetch, d.i.opts.jobs); err != nil {
		w.Abort()
		return nil, err
	}
	if err := w.Commit(ctx); err != nil {
		w.Abort()
		return nil, err
	}
	return w.Paths(), nil
}

// layout lays the archive out, and reports the blobs it leaves out and the
// bytes it will fetch.
func (d *Difference) layout() (*archive.Layout, error) {
	index := &v1.IndexManifest{SchemaVersion: 2, MediaType: types.OCIImageIndex}
	for n, img := range d.images {
		top := img.graph.Top()
		index.Manifests = append(index.Manifests, v1.Descriptor{
			MediaType: top.Desc.MediaType, Digest: top.Desc.Digest, Size: top.Desc.Size, Platform: top.Desc.Platform,
			Annotations: map[string]string{archive.RefNameAnnotation: d.plan.Images[n].Final.Reference},
		})
	}
	manifests := make([]archive.Manifest, len(d.all.Manifests))
	for k, m := range d.all.Manifests {
		manifests[k] = archive.Manifest{Digest: m.Desc.Digest, Raw: m.Raw}
	}
	c := archive.Contents{Plan: d.plan, Index: index, DockerLoad: d.dockerLoad(), Manifests: manifests, Local: d.local, Deltas: d.deltas}
	if signer := d.i.opts.signer; signer != nil {
		c.Sign = func(plan []byte) ([]byte, error) { return archive.Sign(signer, plan) }
	}
	l, err := archive.Build(c)
	if err != nil {
		return nil, err
	}
	r := d.i.opts.reporter
	for _, config := range []bool{true, false} {
		for _, b := range d.plan.Blobs {
			if b.Config == config && !b.Included {
				r.Report(Event{Kind: BlobSkipped, Ref: d.sourceOf(b.Digest).ref.String(), Digest: b.Digest, MediaType: b.MediaType, Size: b.Size, Reason: string(b.Reason)})
			}
		}
	}
	r.Report(Event{Kind: TransferPlanned, Size: l.Fetched()})
	return l, nil
}

// sourceOf is the image whose repository serves the blob h.
func (d *Difference) sourceOf(h v1.Hash) pulledImage { return d.images[d.source[h]] }

// fetch opens a blob for the archive, reporting its start, progress and
// end.
func (d *Difference) fetch(ctx context.Context, desc v1.Descriptor) (io.ReadCloser, error) {
	r := d.i.opts.reporter
	src := d.sourceOf(desc.Digest)
	ev := Event{Kind: BlobStarted, Ref: src.ref.String(), Digest: desc.Digest, MediaType: desc.MediaType, Size: desc.Size}
	r.Report(ev)
	rc, err := src.repo.Blob(ctx, desc, func(n int64) {
		p := ev
		p.Kind, p.Complete = BlobProgress, n
		r.Report(p)
	})
	if err != nil {
		return nil, err
	}
	ev.Kind, ev.Complete = BlobDone, desc.Size
	return &doneReader{ReadCloser: rc, done: func() { r.Report(ev) }}, nil
}

// doneReader calls done once, when its reader ends cleanly: every byte of
// a verified blob has arrived and matched.
type doneReader struct {
	io.ReadCloser
	once sync.Once
	done func()
}

func (d *doneReader) Read(p []byte) (int, error) {
	n, err := d.ReadCloser.Read(p)
	if err == io.EOF {
		d.once.Do(d.done)
	}
	return n, err
}

// dockerLoad returns the docker-load manifest when every image of the
// archive is a single-platform image whose blobs the archive all carries,
// and nil otherwise.
func (d *Difference) dockerLoad() []archive.DockerLoadImage {
	included := map[v1.Hash]bool{}
	for _, b := range d.plan.Blobs {
		included[b.Digest] = b.Included
	}
	var entries []archive.DockerLoadImage
	for _, img := range d.images {
		if img.subject != (v1.Hash{}) {
			continue // an artifact, not an image to load
		}
		top := img.graph.Top()
		if !top.Desc.MediaType.IsImage() {
			return nil
		}
		m, err := v1.ParseManifest(bytes.NewReader(top.Raw))
		if err != nil || !included[m.Config.Digest] {
			return nil
		}
		e := archive.DockerLoadImage{Config: archive.BlobName(m.Config.Digest), RepoTags: []string{}}
		if tag, ok := img.ref.(name.Tag); ok {
			e.RepoTags = append(e.RepoTags, tag.String())
		}
		for _, l := range m.Layers {
			if !included[l.Digest] {
				return nil
			}
			e.Layers = append(e.Layers, archive.BlobName(l.Digest))
		}
		entries = append(entries, e)
	}
	return entries
}
