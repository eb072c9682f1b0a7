package imo

import (
	"bytes"
	"context"
	"errors"
	"fmt"
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
	opened *closers
	ranged sync.Map // v1.Hash → *rangedProgress, for blobs fetched in ranges
}

// Plan is what the archive carries and leaves out, and why: the archive's
// imo.json.
func (d *Difference) Plan() *archive.Plan { return d.plan }

// Close removes the files the pull made, closes the layouts and archives
// it read, and drops idle connections.
func (d *Difference) Close() error {
	d.i.closeIdle()
	err := d.opened.Close()
	if d.tmp != "" {
		err = errors.Join(err, os.RemoveAll(d.tmp))
	}
	return err
}

// WriteTo writes the archive to w, in order, as [Incremental.Pull] streams
// it: up to [WithJobs] blobs download and are verified at once, each into
// a bounded window, while w receives them one after the other.
func (d *Difference) WriteTo(ctx context.Context, w io.Writer) error {
	l, err := d.layout()
	if err != nil {
		return err
	}
	d.i.opts.reporter.Report(Event{Kind: TransferPlanned, Size: l.Fetched()})
	return l.WriteTo(ctx, w, d.fetch, d.ranges(), d.i.opts.jobs)
}

// WriteFile writes the same archive, byte for byte, to the file at path.
// It fetches up to [WithJobs] blobs at once, each straight into its place:
// the bytes written equal the archive's size and memory does not grow with
// the image.
//
// A regular file (or a path that does not exist yet) appears complete or
// not at all, and an interrupted write resumes: imo writes the archive into
// PATH.partial beside it (PATH's target, for a symbolic link, whose link
// stays), with a journal after the archive's end that records how much of
// each blob is written, and renames it over path once complete. A failure,
// ctx cancelled included, leaves path as it was and keeps PATH.partial; a
// later WriteFile of the same images to the same path checks what it
// holds (each blob hashed as far as it was written) and fetches only the
// rest, with Range requests inside a blob. A partial file of other images
// (a tag moved in between) is written over, and so is any with
// [WithNoResume]; one to which no blob byte was written is removed. A FIFO
// or a character device is written straight to, in order, as WriteTo
// writes, and never replaced or resumed. A directory, a block device or a
// socket is refused before anything is fetched. Like docker save and
// skopeo, imo does not fsync: the rename is atomic against the process
// failing, and durability against power loss is left to the file system
// (the resume checks every byte it keeps). A new file gets mode 0644; a
// replaced one keeps its mode.
func (d *Difference) WriteFile(ctx context.Context, path string) error {
	out, err := outfile.OpenPartial(ctx, path)
	if err != nil {
		return err
	}
	defer out.Abort()
	l, err := d.layout()
	if err != nil {
		return err
	}
	if out.Direct() {
		d.i.opts.reporter.Report(Event{Kind: TransferPlanned, Size: l.Fetched()})
		if err := l.WriteTo(ctx, out, d.fetch, d.ranges(), d.i.opts.jobs); err != nil {
			return err
		}
		return out.Commit()
	}
	journal := &offsetFile{f: out.File, base: l.Size()}
	res, err := d.resume(ctx, l, out.File, journal, "file", out.File.Name())
	if err != nil {
		if res.Written > 0 {
			out.Keep()
		}
		return err
	}
	if err := out.File.Truncate(l.Size()); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return out.Commit()
}

// resume writes the archive laid out by l into w, taking up what an
// earlier attempt recorded in journal, and reports what it kept or why it
// discarded it; name is what the user sees of the partial output.
func (d *Difference) resume(ctx context.Context, l *archive.Layout, w, journal archive.ReadWriterAt, salt, name string) (archive.Resumed, error) {
	r := l.Resume(journal, salt, d.i.opts.noResume)
	rep := d.i.opts.reporter
	claimed := r.Claimed()
	switch {
	case r.Discarded != "":
		rep.Report(Event{Kind: PartialDiscarded, Ref: name, Reason: r.Discarded})
	case claimed > 0:
		rep.Report(Event{Kind: PullResumed, Ref: name, Complete: claimed, Size: l.Fetched()})
	}
	rep.Report(Event{Kind: TransferPlanned, Size: l.Fetched() - claimed})
	r.Ranges = d.ranges()
	return r.Write(ctx, w, d.fetchFrom, d.i.opts.jobs)
}

// ranges fetches big blobs in ranges when more than one job may run: with
// one, a blob comes in one request.
func (d *Difference) ranges() archive.FetchRange {
	if d.i.opts.jobs < 2 {
		return nil
	}
	return d.fetchRange
}

// fetchRange opens a range of a blob in a registry, for a blob fetched in
// ranges; a blob read from a layout or archive is read in one go
// ([archive.ErrNoRanges]). The blob's progress is reported as its running
// total over its ranges.
func (d *Difference) fetchRange(ctx context.Context, desc v1.Descriptor, off, end int64) (io.ReadCloser, string, error) {
	src := d.sourceOf(desc.Digest)
	if src.repo == nil {
		return nil, "", archive.ErrNoRanges
	}
	p, _ := d.ranged.LoadOrStore(desc.Digest, &rangedProgress{ev: Event{Ref: src.name, Digest: desc.Digest, MediaType: desc.MediaType, Size: desc.Size}, from: desc.Size, r: d.i.opts.reporter})
	rp := p.(*rangedProgress)
	rp.at(off)
	var last int64
	rc, err := src.repo.BlobRange(ctx, desc, off, end, func(n int64) {
		rp.add(n - last)
		last = n
	})
	switch {
	case errors.Is(err, registry.ErrRangeIgnored):
		return nil, "", fmt.Errorf("%w: %w", archive.ErrNoRanges, err)
	case err != nil:
		return nil, "", err
	}
	rp.start()
	return rc, src.name, nil
}

// rangedProgress reports the progress of a blob fetched in ranges: started
// once, then its bytes in all, then done when they are all there.
type rangedProgress struct {
	r    Reporter
	once sync.Once
	mu   sync.Mutex
	ev   Event // Complete: the bytes of the ranges so far
	from int64 // where the first range starts: an earlier attempt wrote the bytes before
}

// at notes a range starting at off: the blob's bytes before the first
// range count as there.
func (p *rangedProgress) at(off int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.from = min(p.from, off)
}

func (p *rangedProgress) start() {
	p.once.Do(func() {
		p.mu.Lock()
		ev := p.ev
		ev.Complete += p.from
		p.mu.Unlock()
		ev.Kind = BlobStarted
		p.r.Report(ev)
	})
}

func (p *rangedProgress) add(n int64) {
	p.mu.Lock()
	p.ev.Complete += n
	ev := p.ev
	ev.Complete += p.from
	p.mu.Unlock()
	ev.Kind = BlobProgress
	p.r.Report(ev)
	if ev.Complete == ev.Size {
		ev.Kind = BlobDone
		p.r.Report(ev)
	}
}

// offsetFile reads and writes a file from base on.
type offsetFile struct {
	f    *os.File
	base int64
}

func (o *offsetFile) ReadAt(p []byte, off int64) (int, error)  { return o.f.ReadAt(p, o.base+off) }
func (o *offsetFile) WriteAt(p []byte, off int64) (int, error) { return o.f.WriteAt(p, o.base+off) }

// WriteVolumes writes the archive as a volume set beside out (see
// [volume.Names]): volumes of at most size bytes, each of which stands
// alone, and parity parity volumes, so that any parity volumes of the set
// may be lost or damaged. The volumes appear under their names only when
// the whole set is written; it returns their paths, data volumes first. An
// interrupted write keeps the volumes, named with ".partial", and its
// journal in OUT.partial, and resumes as WriteFile does.
func (d *Difference) WriteVolumes(ctx context.Context, out string, size int64, parity int) ([]string, error) {
	l, err := d.layout()
	if err != nil {
		return nil, err
	}
	w, err := volume.Create(l, out, size, parity)
	if err != nil {
		return nil, err
	}
	journalPath := out + outfile.PartialSuffix
	journal, err := os.OpenFile(journalPath, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		w.Abort()
		return nil, fmt.Errorf("creating %s: %w", journalPath, err)
	}
	defer journal.Close()
	if fi, err := journal.Stat(); err == nil && fi.Size() > l.JournalSize() {
		journal.Truncate(0) // a single archive's partial file, not a set's journal
	}
	res, err := d.resume(ctx, l, w, journal, w.Salt(), journalPath)
	if err == nil {
		err = w.Commit(ctx)
	}
	switch {
	case err != nil && res.Written > 0:
		w.Keep()
		return nil, err
	case err != nil:
		w.Abort()
		journal.Close() // before removing it, which some systems refuse for an open file
		os.Remove(journalPath)
		return nil, err
	}
	journal.Close()
	os.Remove(journalPath)
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
				r.Report(Event{Kind: BlobSkipped, Ref: d.sourceOf(b.Digest).name, Digest: b.Digest, MediaType: b.MediaType, Size: b.Size, Reason: string(b.Reason)})
			}
		}
	}
	return l, nil
}

// sourceOf is the image whose repository serves the blob h.
func (d *Difference) sourceOf(h v1.Hash) pulledImage { return d.images[d.source[h]] }

// fetch opens a blob for the archive, reporting its start, progress and
// end.
func (d *Difference) fetch(ctx context.Context, desc v1.Descriptor) (io.ReadCloser, error) {
	r := d.i.opts.reporter
	src := d.sourceOf(desc.Digest)
	ev := Event{Kind: BlobStarted, Ref: src.name, Digest: desc.Digest, MediaType: desc.MediaType, Size: desc.Size}
	r.Report(ev)
	rc, err := src.src.Blob(ctx, desc, func(n int64) {
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

// fetchFrom opens a blob from byte off on, for a resumable write, reporting
// its start, progress and end.
func (d *Difference) fetchFrom(ctx context.Context, desc v1.Descriptor, off int64) (io.ReadCloser, string, error) {
	r := d.i.opts.reporter
	src := d.sourceOf(desc.Digest)
	ev := Event{Kind: BlobStarted, Ref: src.name, Digest: desc.Digest, MediaType: desc.MediaType, Size: desc.Size, Complete: off}
	r.Report(ev)
	rc, err := src.src.BlobFrom(ctx, desc, off, func(n int64) {
		p := ev
		p.Kind, p.Complete = BlobProgress, n
		r.Report(p)
	})
	if err != nil {
		return nil, "", err
	}
	ev.Kind, ev.Complete = BlobDone, desc.Size
	return &doneReader{ReadCloser: rc, done: func() { r.Report(ev) }}, src.name, nil
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
