package imo

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/imokit/imo/internal/outfile"
	"golang.org/x/sync/errgroup"
)

// Scratch is the base that stands for "nothing": pulling against it
// carries the whole final image.
const Scratch = "scratch"

// pullPlan is a resolved pull: what to write and where to fetch it.
type pullPlan struct {
	plan   *Plan
	images []pulledImage
	all    *imageGraph     // every manifest and blob of the images, once each
	source map[v1.Hash]int // which image's repository serves each blob
	// Files the pull already holds (see sublayer.go): whole blobs
	// downloaded to try a delta, and the deltas themselves.
	local  map[v1.Hash]*localFile
	deltas map[v1.Hash]*localFile
	tmp    string // the directory holding them, removed by close
}

// close removes the files the pull made.
func (pp *pullPlan) close() {
	if pp.tmp != "" {
		os.RemoveAll(pp.tmp)
	}
}

// pulledImage is one final image of a pull, or an artifact referring to
// one.
type pulledImage struct {
	ref     name.Reference
	graph   *imageGraph
	client  *repoClient // the image's repository
	subject v1.Hash     // for an artifact, the manifest it refers to
}

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
	return i.pullStream(ctx, []Pair{{Base: base, Final: final}}, false)
}

// PullBundle is [Incremental.Pull] for several images at once: one archive
// (a bundle) with an index.json entry per final image, in the order of
// pairs, named by its reference. Vet and push take a bundle's destination
// as a target (see [Incremental.PushVet]), however many images it holds. Every blob is stored once however many images and
// platforms use it, and a blob is left out only when the base of every
// image that uses it has it. Up to [WithJobs] images resolve at once.
func (i *Incremental) PullBundle(ctx context.Context, pairs []Pair) (io.ReadCloser, error) {
	return i.pullStream(ctx, pairs, true)
}

func (i *Incremental) pullStream(ctx context.Context, pairs []Pair, bundle bool) (io.ReadCloser, error) {
	if i.err != nil {
		return nil, i.err
	}
	pp, err := i.resolve(ctx, pairs, bundle)
	if err != nil {
		i.pull.closeIdle()
		return nil, err
	}
	ctx, cancel := context.WithCancel(ctx)
	pr, pw := io.Pipe()
	s := &pullStream{PipeReader: pr, cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(s.done)
		defer i.pull.closeIdle()
		defer pp.close()
		s.err = pp.write(ctx, pw, i.opts.jobs, i.opts.reporter)
		pw.CloseWithError(s.err)
	}()
	return s, nil
}

// Plan resolves base and final as [Incremental.Pull] does and returns the
// plan of the archive Pull would write, without downloading any blob, but
// for what deciding on sub-layer deltas needs when [WithSublayerDeltas] is
// set (the base's layers and the changed layers).
func (i *Incremental) Plan(ctx context.Context, base, final string) (*Plan, error) {
	return i.plan(ctx, []Pair{{Base: base, Final: final}}, false)
}

// PlanBundle is [Incremental.Plan] for the archive [Incremental.PullBundle]
// would write.
func (i *Incremental) PlanBundle(ctx context.Context, pairs []Pair) (*Plan, error) {
	return i.plan(ctx, pairs, true)
}

func (i *Incremental) plan(ctx context.Context, pairs []Pair, bundle bool) (*Plan, error) {
	if i.err != nil {
		return nil, i.err
	}
	defer i.pull.closeIdle()
	pp, err := i.resolve(ctx, pairs, bundle)
	if err != nil {
		return nil, err
	}
	pp.close()
	return pp.plan, nil
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

// pairRefs is a pair's parsed references; base is nil for scratch.
type pairRefs struct {
	base  *imageRef
	final imageRef
}

// parsePairs parses every reference of pairs before anything is fetched.
func (i *Incremental) parsePairs(pairs []Pair) ([]pairRefs, error) {
	if len(pairs) == 0 {
		return nil, fmt.Errorf("%w: no image to pull", ErrInvalidPairs)
	}
	refs := make([]pairRefs, len(pairs))
	seen := map[string]bool{}
	for n, p := range pairs {
		where := ""
		if len(pairs) > 1 {
			where = fmt.Sprintf(" of pair %d", n+1)
		}
		if err := p.check(); err != nil {
			return nil, fmt.Errorf("%w: pair %d: %v", ErrInvalidPairs, n+1, err)
		}
		var err error
		if refs[n].final, err = i.parseRef(p.Final, i.opts.plainPull); err != nil {
			return nil, fmt.Errorf("final image%s: %w", where, err)
		}
		if seen[refs[n].final.String()] {
			return nil, fmt.Errorf("%w: final image %s is listed twice", ErrInvalidPairs, p.Final)
		}
		seen[refs[n].final.String()] = true
		if p.Base != Scratch {
			base, err := i.parseRef(p.Base, i.opts.plainPull)
			if err != nil {
				return nil, fmt.Errorf("base image%s: %w", where, err)
			}
			refs[n].base = &base
		}
	}
	return refs, nil
}

// resolve fetches the manifests of every final and base image and decides
// what the archive carries. Each distinct base is resolved once.
func (i *Incremental) resolve(ctx context.Context, pairs []Pair, bundle bool) (*pullPlan, error) {
	refs, err := i.parsePairs(pairs)
	if err != nil {
		return nil, err
	}
	pp := &pullPlan{images: make([]pulledImage, len(pairs)), source: map[v1.Hash]int{}}
	bases := map[string]*pulledImage{}
	var mu sync.Mutex
	eg, ectx := errgroup.WithContext(ctx)
	eg.SetLimit(i.opts.jobs)
	for n, r := range refs {
		eg.Go(func() error {
			c, err := newRepoClient(ectx, r.final.repo, i.pull, i.opts.finalAuth, i.opts.keychain, i.opts.retry, []string{r.final.repo.Scope(transport.PullScope)})
			if err != nil {
				return err
			}
			ref, g, err := i.resolveImage(ectx, c, r.final, i.opts.platforms)
			pp.images[n] = pulledImage{ref: ref, graph: g, client: c}
			return err
		})
		if r.base == nil {
			continue
		}
		mu.Lock()
		_, started := bases[r.base.String()]
		if !started {
			bases[r.base.String()] = nil
		}
		mu.Unlock()
		if started {
			continue
		}
		eg.Go(func() error {
			c, err := newRepoClient(ectx, r.base.repo, i.pull, i.opts.baseAuth, i.opts.keychain, i.opts.retry, []string{r.base.repo.Scope(transport.PullScope)})
			if err != nil {
				return err
			}
			ref, g, err := i.resolveImage(ectx, c, *r.base, nil)
			mu.Lock()
			bases[r.base.String()] = &pulledImage{ref: ref, graph: g, client: c}
			mu.Unlock()
			return err
		})
	}
	if err := eg.Wait(); err != nil {
		return nil, err
	}

	var images []PlanImage
	var inBase []map[v1.Hash]bool
	var baseOf []*pulledImage // each image's base, nil for scratch
	finals := pp.images
	pp.images = nil
	for n, r := range refs {
		img := finals[n]
		base := ImageRef{Reference: Scratch}
		layers := map[v1.Hash]bool{}
		var bi *pulledImage
		if r.base != nil {
			bi = bases[r.base.String()]
			bg := bi.graph
			base = ImageRef{Reference: pairs[n].Base, Digest: bg.top().desc.Digest}
			for _, b := range bg.blobs {
				if !b.config {
					layers[b.desc.Digest] = true
				}
			}
		}
		found := []pulledImage{img}
		if i.opts.referrers {
			artifacts, err := i.findReferrers(ctx, img)
			if err != nil {
				return nil, err
			}
			found = append(found, artifacts...)
		}
		for k, f := range found {
			called := pairs[n].Final
			if k > 0 {
				called = f.ref.String()
			}
			pi := planImage(ImageRef{Reference: called, Digest: f.graph.top().desc.Digest}, base, f.graph)
			pi.Subject = f.subject
			images = append(images, pi)
			inBase = append(inBase, layers)
			if k == 0 {
				baseOf = append(baseOf, bi)
			} else {
				baseOf = append(baseOf, nil) // no delta for artifacts
			}
			pp.images = append(pp.images, f)
		}
	}
	graphs := make([]*imageGraph, len(pp.images))
	for n, img := range pp.images {
		graphs[n] = img.graph
		for _, b := range img.graph.blobs {
			if _, ok := pp.source[b.desc.Digest]; !ok {
				pp.source[b.desc.Digest] = n
			}
		}
	}
	pp.all = mergeGraphs(graphs)
	held := map[v1.Hash]*InventoryBlob{}
	pp.plan = newPlan(images, pp.all, func(b *blobUse) string {
		if b.foreign() {
			return reasonForeign
		}
		var inv *Inventory
		for _, have := range i.opts.have {
			if ib, ok := have.Blob(b.desc.Digest); ok {
				held[b.desc.Digest], inv = &ib, have
				break
			}
		}
		carried := false
		for n, g := range graphs {
			if _, uses := g.byDigest[b.desc.Digest]; uses && (b.config || !inBase[n][b.desc.Digest]) {
				carried = true
				break
			}
		}
		switch {
		case !carried:
			return "in base"
		case inv != nil:
			return "in the inventory of " + inventoryName(inv) + " taken " + inv.Taken.UTC().Format(time.RFC3339)
		}
		return ""
	})
	// Where an inventory saw a blob left out (in base or by the
	// inventory), push may mount it from when the destination lacks it.
	for k, b := range pp.plan.Blobs {
		if ib := held[b.Digest]; ib != nil && !b.Included {
			pp.plan.Blobs[k].HeldBy = ib.Repositories[:min(len(ib.Repositories), maxHeldBy)]
		}
	}
	pp.plan.Bundle = bundle
	for _, inv := range i.opts.have {
		pp.plan.Inventories = append(pp.plan.Inventories, PlanInventory{Registry: inv.Registry, Prefix: inv.Prefix, Taken: inv.Taken, Blobs: len(inv.Blobs)})
	}
	if i.opts.sublayer {
		if err := i.prepareDeltas(ctx, pp, baseOf); err != nil {
			pp.close()
			return nil, err
		}
	}
	return pp, nil
}

// inventoryName is the registry and prefix an inventory covers.
func inventoryName(inv *Inventory) string {
	if inv.Prefix == "" {
		return inv.Registry
	}
	return inv.Registry + "/" + inv.Prefix
}

// resolveImage fetches the manifest tree of r, keeping only the given
// platforms when there are any. ref is the image's reference: its tag
// when r names one (checked to agree with a digest r names too), else its
// digest.
func (i *Incremental) resolveImage(ctx context.Context, c *repoClient, r imageRef, platforms []v1.Platform) (ref name.Reference, g *imageGraph, err error) {
	top, err := c.resolve(ctx, r)
	if err != nil {
		return nil, nil, err
	}
	ref = r.fetch()
	if r.tag != "" {
		ref = r.repo.Tag(r.tag)
	}
	i.opts.reporter.Report(Event{Kind: ImageResolved, Ref: r.String(), Digest: top.desc.Digest, MediaType: top.desc.MediaType, Size: top.desc.Size})
	if len(platforms) > 0 {
		if top, err = selectPlatforms(ctx, c, ref, top, platforms); err != nil {
			return nil, nil, err
		}
	}
	g, err = walkImage(ctx, top, c.manifest, c.repo.String(), i.opts.jobs)
	if err != nil {
		return nil, nil, fmt.Errorf("reading manifests of %s: %w", r, err)
	}
	return ref, g, nil
}

// selectPlatforms narrows top to the manifests matching platforms: the
// matching child itself when one matches, a new index of the matches when
// several do.
func selectPlatforms(ctx context.Context, c *repoClient, ref name.Reference, top manifestNode, platforms []v1.Platform) (manifestNode, error) {
	idx, matched, err := matchPlatforms(ctx, c, ref, top, platforms)
	if err != nil || idx == nil {
		return top, err
	}
	if len(matched) == 1 {
		raw, err := c.manifest(ctx, matched[0])
		return manifestNode{desc: matched[0], raw: raw}, err
	}
	idx.Manifests = matched
	raw, err := json.Marshal(idx)
	if err != nil {
		return top, err
	}
	h, size, err := v1.SHA256(bytes.NewReader(raw))
	if err != nil {
		return top, err
	}
	return manifestNode{desc: v1.Descriptor{MediaType: top.desc.MediaType, Digest: h, Size: size}, raw: raw}, nil
}

// matchPlatforms returns the descriptors of top, an index, that match one
// of platforms, and the parsed index; for a single image it checks the
// image's platform and returns no index. Matching nothing is a
// [*PlatformError].
func matchPlatforms(ctx context.Context, c *repoClient, ref name.Reference, top manifestNode, platforms []v1.Platform) (*v1.IndexManifest, []v1.Descriptor, error) {
	wanted := platformStrings(platforms)
	if !top.desc.MediaType.IsIndex() {
		p, err := imagePlatform(ctx, c, top)
		if err != nil {
			return nil, nil, err
		}
		for _, w := range platforms {
			if platformMatches(w, p) {
				return nil, nil, nil
			}
		}
		return nil, nil, &PlatformError{Image: ref.String(), Wanted: wanted, Available: []string{p.String()}}
	}
	idx, err := v1.ParseIndexManifest(bytes.NewReader(top.raw))
	if err != nil {
		return nil, nil, fmt.Errorf("parsing index %s: %w", ref, err)
	}
	var matched []v1.Descriptor
	var available []string
	for _, d := range idx.Manifests {
		if d.Platform == nil {
			continue
		}
		if p := d.Platform.String(); !slices.Contains(available, p) {
			available = append(available, p)
		}
		for _, w := range platforms {
			if platformMatches(w, *d.Platform) {
				matched = append(matched, d)
				break
			}
		}
	}
	if len(matched) == 0 {
		return nil, nil, &PlatformError{Image: ref.String(), Wanted: wanted, Available: available}
	}
	return idx, matched, nil
}

// imagePlatform reads the platform of a single image from its config.
func imagePlatform(ctx context.Context, c *repoClient, n manifestNode) (v1.Platform, error) {
	m, err := v1.ParseManifest(bytes.NewReader(n.raw))
	if err != nil {
		return v1.Platform{}, fmt.Errorf("parsing manifest %s: %w", n.desc.Digest, err)
	}
	if m.Config.Size > maxMetadataSize {
		return v1.Platform{}, fmt.Errorf("%w: config %s of %s declares %d bytes, more than the %d allowed", ErrInvalidManifest, m.Config.Digest, c.repo, m.Config.Size, maxMetadataSize)
	}
	rc, err := c.blob(ctx, m.Config, nil)
	if err != nil {
		return v1.Platform{}, err
	}
	defer rc.Close()
	raw, err := io.ReadAll(rc) // to the end, where the digest is checked
	if err != nil {
		return v1.Platform{}, fmt.Errorf("reading config %s of %s: %w", m.Config.Digest, c.repo, err)
	}
	cf, err := v1.ParseConfigFile(bytes.NewReader(raw))
	if err != nil {
		return v1.Platform{}, fmt.Errorf("parsing config %s of %s: %w", m.Config.Digest, c.repo, err)
	}
	if p := cf.Platform(); p != nil {
		return *p, nil
	}
	return v1.Platform{}, nil
}

// layout lays the archive out, and reports the blobs it leaves out.
func (pp *pullPlan) layout(r Reporter) (*archiveLayout, error) {
	l := &archiveLayout{}
	index := v1.IndexManifest{SchemaVersion: 2, MediaType: types.OCIImageIndex}
	for n, img := range pp.images {
		top := img.graph.top()
		index.Manifests = append(index.Manifests, v1.Descriptor{
			MediaType: top.desc.MediaType, Digest: top.desc.Digest, Size: top.desc.Size, Platform: top.desc.Platform,
			Annotations: map[string]string{refNameAnnotation: pp.plan.Images[n].Final.Reference},
		})
	}
	if err := l.file(LayoutFile, []byte(`{"imageLayoutVersion":"1.0.0"}`)); err != nil {
		return nil, err
	}
	if err := l.json(PlanFile, pp.plan); err != nil {
		return nil, err
	}
	if err := l.json(IndexFile, index); err != nil {
		return nil, err
	}
	if dm := pp.dockerManifest(); dm != nil {
		if err := l.json(DockerManifestFile, dm); err != nil {
			return nil, err
		}
	}
	if err := l.dir(blobsDir); err != nil {
		return nil, err
	}
	if err := l.dir(blobsDir + "/sha256"); err != nil {
		return nil, err
	}
	written := map[v1.Hash]bool{}
	for _, m := range pp.all.manifests {
		written[m.desc.Digest] = true
		if err := l.file(blobName(m.desc.Digest), m.raw); err != nil {
			return nil, err
		}
	}
	// Configs before layers, so that a reader has all metadata before the
	// first layer byte.
	for _, config := range []bool{true, false} {
		for _, b := range pp.plan.Blobs {
			switch {
			case b.Config != config || written[b.Digest]:
			case !b.Included:
				r.Report(Event{Kind: BlobSkipped, Ref: pp.sourceOf(b.Digest).ref.String(), Digest: b.Digest, MediaType: b.MediaType, Size: b.Size, Reason: b.Reason})
			default:
				written[b.Digest] = true
				var err error
				if f := pp.local[b.Digest]; f != nil {
					err = l.local(blobName(b.Digest), f)
				} else {
					err = l.blob(v1.Descriptor{MediaType: b.MediaType, Digest: b.Digest, Size: b.Size})
				}
				if err != nil {
					return nil, err
				}
			}
		}
	}
	if len(pp.deltas) > 0 {
		if err := l.dir(DeltasDir); err != nil {
			return nil, err
		}
		if err := l.dir(DeltasDir + "/sha256"); err != nil {
			return nil, err
		}
		for _, b := range pp.plan.Blobs {
			if f := pp.deltas[b.Digest]; f != nil && b.Delta != nil {
				if err := l.local(deltaName(b.Digest), f); err != nil {
					return nil, err
				}
			}
		}
	}
	l.end()
	return l, nil
}

// copyLocal copies a local file to w.
func copyLocal(w io.Writer, f *localFile) error {
	src, err := os.Open(f.path)
	if err != nil {
		return fmt.Errorf("writing archive: %w", err)
	}
	defer src.Close()
	if n, err := io.Copy(w, src); err != nil || n != f.size {
		return fmt.Errorf("writing archive: copied %d of %d bytes of %s: %v", n, f.size, f.path, err)
	}
	return nil
}

// sourceOf is the image whose repository serves the blob h.
func (pp *pullPlan) sourceOf(h v1.Hash) pulledImage { return pp.images[pp.source[h]] }

// Prefetching for the stream: each blob downloading ahead of the writer
// holds at most prefetchChunks chunks of prefetchChunk bytes.
const (
	prefetchChunk  = 256 << 10
	prefetchChunks = 16
)

var chunkPool = sync.Pool{New: func() any { b := make([]byte, prefetchChunk); return &b }}

// prefetch is a blob downloading ahead of the writer.
type prefetch struct {
	chunks chan chunk
	err    error // set before chunks is closed
}

// chunk is the first n bytes of a pooled buffer.
type chunk struct {
	buf *[]byte
	n   int
}

// write streams the archive to w, in order. Up to jobs blobs download and
// are verified at once, each into a bounded window, while w receives them
// one after the other.
func (pp *pullPlan) write(ctx context.Context, w io.Writer, jobs int, r Reporter) error {
	l, err := pp.layout(r)
	if err != nil {
		return err
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	var blobs []v1.Descriptor
	for _, s := range l.segs {
		if s.blob != nil {
			blobs = append(blobs, *s.blob)
		}
	}
	l.plan(r)
	fetches := make([]*prefetch, len(blobs))
	started, current := 0, 0
	for _, s := range l.segs {
		if s.file != nil {
			if err := copyLocal(w, s.file); err != nil {
				return err
			}
			continue
		}
		if s.blob == nil {
			if _, err := w.Write(s.lit); err != nil {
				return fmt.Errorf("writing archive: %w", err)
			}
			continue
		}
		for ; started < len(blobs) && started < current+jobs; started++ {
			p := &prefetch{chunks: make(chan chunk, prefetchChunks)}
			fetches[started] = p
			desc := blobs[started]
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer close(p.chunks)
				p.err = pp.fetch(ctx, desc, p.chunks, r)
			}()
		}
		p := fetches[current]
		for c := range p.chunks {
			_, err := w.Write((*c.buf)[:c.n])
			chunkPool.Put(c.buf)
			if err != nil {
				return fmt.Errorf("writing archive: %w", err)
			}
		}
		if p.err != nil {
			return p.err
		}
		fetches[current] = nil
		current++
	}
	return nil
}

// fetch downloads one blob, verified, into chunks.
func (pp *pullPlan) fetch(ctx context.Context, desc v1.Descriptor, chunks chan<- chunk, r Reporter) error {
	rc, done, err := pp.open(ctx, desc, r)
	if err != nil {
		return err
	}
	defer rc.Close()
	for {
		buf := chunkPool.Get().(*[]byte)
		n, err := fill(rc, *buf)
		if n > 0 {
			select {
			case chunks <- chunk{buf, n}:
			case <-ctx.Done():
				return ctx.Err()
			}
		} else {
			chunkPool.Put(buf)
		}
		if err == io.EOF { // exactly io.EOF: the verifying reader checked size and digest
			done()
			return nil
		}
		if err != nil {
			return fmt.Errorf("writing %s: %w", blobName(desc.Digest), err)
		}
	}
}

// fill reads into b until it is full or r fails.
func fill(r io.Reader, b []byte) (int, error) {
	n := 0
	for n < len(b) {
		m, err := r.Read(b[n:])
		n += m
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

// writeAt writes the archive into w, fetching up to jobs blobs at once,
// each straight into its place: no blob is held in memory or spooled.
func (pp *pullPlan) writeAt(ctx context.Context, w io.WriterAt, jobs int, r Reporter) error {
	l, err := pp.layout(r)
	if err != nil {
		return err
	}
	for _, s := range l.segs {
		if s.lit != nil {
			if _, err := w.WriteAt(s.lit, s.off); err != nil {
				return fmt.Errorf("writing archive: %w", err)
			}
		}
	}
	l.plan(r)
	eg, ectx := errgroup.WithContext(ctx)
	eg.SetLimit(jobs)
	for _, s := range l.segs {
		if s.file != nil {
			eg.Go(func() error { return copyLocal(io.NewOffsetWriter(w, s.off), s.file) })
		}
		if s.blob != nil {
			eg.Go(func() error {
				return pp.copyBlob(ectx, io.NewOffsetWriter(w, s.off), *s.blob, r)
			})
		}
	}
	return eg.Wait()
}

// copyBlob copies one blob, verified, to w.
func (pp *pullPlan) copyBlob(ctx context.Context, w io.Writer, desc v1.Descriptor, r Reporter) error {
	rc, done, err := pp.open(ctx, desc, r)
	if err != nil {
		return err
	}
	defer rc.Close()
	if _, err := io.Copy(w, rc); err != nil {
		return fmt.Errorf("writing %s: %w", blobName(desc.Digest), err)
	}
	done()
	return nil
}

// open starts downloading a blob, reporting its start and progress to r;
// done reports its end.
func (pp *pullPlan) open(ctx context.Context, desc v1.Descriptor, r Reporter) (rc io.ReadCloser, done func(), err error) {
	src := pp.sourceOf(desc.Digest)
	ev := Event{Ref: src.ref.String(), Digest: desc.Digest, MediaType: desc.MediaType, Size: desc.Size}
	ev.Kind = BlobStarted
	r.Report(ev)
	rc, err = src.client.blob(ctx, desc, func(n int64) {
		p := ev
		p.Kind, p.Complete = BlobProgress, n
		r.Report(p)
	})
	done = func() {
		ev.Kind, ev.Complete = BlobDone, desc.Size
		r.Report(ev)
	}
	return rc, done, err
}

// dockerLoadEntry is one image of a docker-load manifest.json.
type dockerLoadEntry struct {
	Config   string
	RepoTags []string
	Layers   []string
}

// dockerManifest returns the docker-load manifest when every image of the
// archive is a single-platform image whose blobs the archive all carries,
// and nil otherwise.
func (pp *pullPlan) dockerManifest() []dockerLoadEntry {
	included := map[v1.Hash]bool{}
	for _, b := range pp.plan.Blobs {
		included[b.Digest] = b.Included
	}
	var entries []dockerLoadEntry
	for _, img := range pp.images {
		if img.subject != (v1.Hash{}) {
			continue // an artifact, not an image to load
		}
		top := img.graph.top()
		if !top.desc.MediaType.IsImage() {
			return nil
		}
		m, err := v1.ParseManifest(bytes.NewReader(top.raw))
		if err != nil || !included[m.Config.Digest] {
			return nil
		}
		e := dockerLoadEntry{Config: blobName(m.Config.Digest), RepoTags: []string{}}
		if tag, ok := img.ref.(name.Tag); ok {
			e.RepoTags = append(e.RepoTags, tag.String())
		}
		for _, l := range m.Layers {
			if !included[l.Digest] {
				return nil
			}
			e.Layers = append(e.Layers, blobName(l.Digest))
		}
		entries = append(entries, e)
	}
	return entries
}

// PullToFile resolves base and final as [Incremental.Pull] does and writes
// the same archive, byte for byte, to the file at path. Because the file
// can be written anywhere, it fetches up to [WithJobs] blobs at once, each
// straight into its place: the bytes written equal the archive's size and
// memory does not grow with the image.
//
// A regular file (or a path that does not exist yet) appears complete or
// not at all: imo writes a temporary file beside it and renames it over
// path; on any failure, ctx cancelled included, it removes the temporary
// file and leaves path as it was. A symbolic link is followed and its
// target replaced that way; the link stays. A FIFO or a character device
// is written straight to, in order, as [Incremental.Pull] streams it, and
// never replaced. A directory, a block device or a socket is refused before
// anything is fetched. Like docker save and skopeo, imo does not fsync: the
// rename is atomic against the process failing, and durability against
// power loss is left to the file system. A new file gets mode 0644; a
// replaced one keeps its mode.
func (i *Incremental) PullToFile(ctx context.Context, base, final, path string) (*Plan, error) {
	return i.pullToFile(ctx, []Pair{{Base: base, Final: final}}, path, false)
}

// PullBundleToFile writes the archive [Incremental.PullBundle] streams to
// the file at path, as [Incremental.PullToFile] does.
func (i *Incremental) PullBundleToFile(ctx context.Context, pairs []Pair, path string) (*Plan, error) {
	return i.pullToFile(ctx, pairs, path, true)
}

func (i *Incremental) pullToFile(ctx context.Context, pairs []Pair, path string, bundle bool) (*Plan, error) {
	if i.err != nil {
		return nil, i.err
	}
	defer i.pull.closeIdle()
	out, err := outfile.Open(ctx, path)
	if err != nil {
		return nil, err
	}
	defer out.Abort()
	pp, err := i.resolve(ctx, pairs, bundle)
	if err != nil {
		return nil, err
	}
	defer pp.close()
	if out.Direct() {
		err = pp.write(ctx, out, i.opts.jobs, i.opts.reporter)
	} else {
		err = pp.writeAt(ctx, out, i.opts.jobs, i.opts.reporter)
	}
	if err != nil {
		return nil, err
	}
	if err := out.Commit(); err != nil {
		return nil, err
	}
	return pp.plan, nil
}
