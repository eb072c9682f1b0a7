package imo

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/imokit/imo/archive"
	"github.com/imokit/imo/internal/graph"
	"github.com/imokit/imo/internal/registry"
	"github.com/imokit/imo/internal/sublayer"
)

// Sub-layer deltas (see WithSublayerDeltas): the pull side expresses a
// changed layer as a delta against base's layers and proves that it
// rebuilds the blob; the push side rebuilds the blob from the base layers
// the destination holds and checks it again before uploading it.

// minDeltaBlob is the smallest layer imo tries a delta for: below it, the
// base downloads cost more than a delta could save.
const minDeltaBlob = 64 << 10

// deltaLayer reports whether imo can try a delta for a layer of media type
// mt: a distributable tar, compressed with gzip or zstd.
func deltaLayer(mt types.MediaType) bool {
	switch mt {
	case types.DockerLayer, types.OCILayer, types.OCILayerZStd:
		return true
	}
	return false
}

// prepareDeltas tries a delta for every layer the archive carries whole,
// against the layers of the same platform of its image's base. The pull
// downloads those base layers and the carried layers into a temporary
// directory; a layer whose delta does not pay is then written into the
// archive from there, not downloaded twice.
func (d *Difference) prepareDeltas(ctx context.Context) error {
	carried := map[v1.Hash]int{}
	for k, b := range d.plan.Blobs {
		if b.Included && !b.Config && b.Size >= minDeltaBlob && deltaLayer(b.MediaType) {
			carried[b.Digest] = k
		}
	}
	tried := map[v1.Hash]bool{}
	for _, img := range d.images {
		if img.base == nil {
			continue
		}
		for _, m := range img.graph.Manifests {
			if !m.Desc.MediaType.IsImage() {
				continue
			}
			bm := samePlatform(img.base.graph, m)
			if bm == nil {
				continue
			}
			fm, err := v1.ParseManifest(bytes.NewReader(m.Raw))
			if err != nil {
				return fmt.Errorf("parsing manifest %s: %w", m.Desc.Digest, err)
			}
			base, err := v1.ParseManifest(bytes.NewReader(bm.Raw))
			if err != nil {
				return fmt.Errorf("parsing manifest %s: %w", bm.Desc.Digest, err)
			}
			var todo []v1.Descriptor
			for _, l := range fm.Layers {
				if _, ok := carried[l.Digest]; ok && !tried[l.Digest] {
					tried[l.Digest] = true
					todo = append(todo, l)
				}
			}
			usable := len(base.Layers) > 0
			for _, l := range base.Layers {
				usable = usable && deltaLayer(l.MediaType)
			}
			if len(todo) == 0 || !usable {
				continue
			}
			if err := d.deltaGroup(ctx, img, base.Layers, todo, carried); err != nil {
				return err
			}
		}
	}
	return nil
}

// samePlatform is the image manifest of base for m's platform: the one
// with the same platform in base's index, or base itself when both are
// single images.
func samePlatform(base *graph.Graph, m graph.Node) *graph.Node {
	if m.Desc.Platform == nil {
		if top := base.Top(); top.Desc.MediaType.IsImage() && top.Desc.Platform == nil {
			return &top
		}
		return nil
	}
	for k, bm := range base.Manifests {
		if bm.Desc.MediaType.IsImage() && bm.Desc.Platform != nil && bm.Desc.Platform.String() == m.Desc.Platform.String() {
			return &base.Manifests[k]
		}
	}
	return nil
}

// deltaGroup tries deltas for the layers todo of img against the base
// layers baseLayers of its base.
func (d *Difference) deltaGroup(ctx context.Context, img pulledImage, baseLayers, todo []v1.Descriptor, carried map[v1.Hash]int) error {
	if d.tmp == "" {
		dir, err := os.MkdirTemp(d.i.opts.tempDir, "imo-pull-")
		if err != nil {
			return fmt.Errorf("preparing sub-layer deltas: %w", err)
		}
		d.tmp, d.local, d.deltas = dir, map[v1.Hash]archive.File{}, map[v1.Hash]archive.File{}
	}
	sb, err := sublayer.NewBase(d.tmp)
	if err != nil {
		return err
	}
	defer sb.Close()
	// The first layer's recipe is proven (a full recompression, the
	// longest step) while the base layers are read.
	first, err := d.startProof(ctx, img, todo[0])
	if err != nil {
		return err
	}
	defer first.stop()
	for _, l := range baseLayers {
		if err := addBase(ctx, sb, img.base.src, img.base.name, l); err != nil {
			return err
		}
	}
	byDigest := map[string]v1.Descriptor{}
	for _, l := range baseLayers {
		byDigest[l.Digest.String()] = l
	}
	for k, l := range todo {
		lp := first
		if k > 0 {
			if lp, err = d.startProof(ctx, img, l); err != nil {
				return err
			}
		}
		pb := &d.plan.Blobs[carried[l.Digest]]
		err := d.tryDelta(ctx, sb, img, l, pb, byDigest, lp)
		lp.stop()
		if err != nil {
			return err
		}
	}
	return nil
}

// layerProof is a downloaded layer whose recipe is being proven.
type layerProof struct {
	path string
	f    *os.File
	pf   *sublayer.Proof
}

// startProof downloads the layer l of img into the temporary directory
// and starts the proof of its recipe.
func (d *Difference) startProof(ctx context.Context, img pulledImage, l v1.Descriptor) (*layerProof, error) {
	path := filepath.Join(d.tmp, "blob-"+l.Digest.Hex)
	if err := download(ctx, img, l, path); err != nil {
		return nil, err
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("preparing a sub-layer delta of %s: %w", l.Digest, err)
	}
	return &layerProof{path: path, f: f, pf: sublayer.StartProof(ctx, f, l.Size, l.Digest)}, nil
}

// stop ends the proof and closes the layer's file; it may be called again.
func (p *layerProof) stop() {
	if p.pf != nil {
		p.pf.Stop()
		p.pf = nil
	}
	if p.f != nil {
		p.f.Close()
		p.f = nil
	}
}

// tryDelta writes the delta of the layer l of img, downloaded and its
// recipe being proven in lp, against sb: pb records the delta when it pays
// and every image using the layer can rebuild it, and why not otherwise,
// when the layer is then written into the archive from the download.
func (d *Difference) tryDelta(ctx context.Context, sb *sublayer.Base, img pulledImage, l v1.Descriptor, pb *archive.PlanBlob, bases map[string]v1.Descriptor, lp *layerProof) error {
	path := lp.path
	deltaPath := filepath.Join(d.tmp, "delta-"+l.Digest.Hex)
	st, err := prepareDelta(ctx, sb, lp.pf, deltaPath, l)
	lp.stop()
	if err == nil && !basesShared(d, l.Digest, st.Header.Bases) {
		err = fmt.Errorf("%w: an image using it has a base without the layers the delta draws on", sublayer.ErrNotWorthwhile)
	}
	switch {
	case err == nil:
		os.Remove(path)
		pb.Included, pb.Reason = false, archive.ReasonDelta
		sum, err := fileDigest(deltaPath)
		if err != nil {
			return fmt.Errorf("preparing a sub-layer delta of %s: %w", l.Digest, err)
		}
		pb.Delta = &archive.PlanDelta{Size: st.DeltaSize, Digest: sum, DiffID: st.Header.DiffID, Recipe: st.Header.Recipe.String()}
		for _, id := range st.Header.Bases {
			pb.Delta.Bases = append(pb.Delta.Bases, bases[id])
		}
		d.deltas[l.Digest] = archive.File{Path: deltaPath, Size: st.DeltaSize}
		d.i.opts.reporter.Report(Event{Kind: BlobSkipped, Ref: img.name, Digest: l.Digest, MediaType: l.MediaType, Size: l.Size,
			Reason: fmt.Sprintf("%s of %d bytes (%s)", archive.ReasonDelta, st.DeltaSize, st.Header.Recipe.String())})
	case errors.Is(err, sublayer.ErrUnsupportedEncoder), errors.Is(err, sublayer.ErrNotWorthwhile):
		os.Remove(deltaPath)
		d.local[l.Digest] = archive.File{Path: path, Size: l.Size}
		pb.Reason = archive.NoDelta(err)
	default:
		return fmt.Errorf("preparing a sub-layer delta of %s from %s: %w", l.Digest, img.name, err)
	}
	return nil
}

// fileDigest is the sha256 of the file at path.
func fileDigest(path string) (v1.Hash, error) {
	f, err := os.Open(path)
	if err != nil {
		return v1.Hash{}, err
	}
	defer f.Close()
	h, _, err := v1.SHA256(f)
	return h, err
}

// prepareDelta writes the delta of the layer l, whose recipe pf proves,
// against sb into deltaPath.
func prepareDelta(ctx context.Context, sb *sublayer.Base, pf *sublayer.Proof, deltaPath string, l v1.Descriptor) (sublayer.Stats, error) {
	df, err := os.Create(deltaPath)
	if err != nil {
		return sublayer.Stats{}, fmt.Errorf("preparing a sub-layer delta of %s: %w", l.Digest, err)
	}
	st, err := sublayer.PrepareWith(ctx, sb, pf, df)
	if cerr := df.Close(); err == nil {
		err = cerr
	}
	return st, err
}

// basesShared reports whether every image of the pull that uses the layer
// h has a base holding all the base layers a delta of h draws on: only then
// can each image's destination, which holds its base, rebuild it.
func basesShared(d *Difference, h v1.Hash, bases []string) bool {
	for _, img := range d.images {
		if _, uses := img.graph.Blob(h); !uses {
			continue
		}
		if img.base == nil {
			return false
		}
		for _, id := range bases {
			b, err := v1.NewHash(id)
			if err != nil {
				return false
			}
			if _, ok := img.base.graph.Blob(b); !ok {
				return false
			}
		}
	}
	return true
}

// addBase adds the base layer l, from src, to sb, and reads it to its end
// so that its digest is checked.
func addBase(ctx context.Context, sb *sublayer.Base, src graph.BlobFetcher, source string, l v1.Descriptor) error {
	rc, err := src.Blob(ctx, l, nil)
	if err != nil {
		return err
	}
	defer rc.Close()
	if err := sb.AddLayer(ctx, rc, l.Digest.String()); err != nil {
		return fmt.Errorf("reading base layer %s of %s: %w", l.Digest, source, err)
	}
	if _, err := io.Copy(io.Discard, rc); err != nil {
		return fmt.Errorf("reading base layer %s of %s: %w", l.Digest, source, err)
	}
	return nil
}

// download writes the blob l of img, verified, to the file at path.
func download(ctx context.Context, img pulledImage, l v1.Descriptor, path string) error {
	rc, err := img.src.Blob(ctx, l, nil)
	if err != nil {
		return err
	}
	defer rc.Close()
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("downloading %s from %s: %w", l.Digest, img.name, err)
	}
	_, err = io.Copy(f, rc)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("downloading %s from %s: %w", l.Digest, img.name, err)
	}
	return nil
}

// rebuilder rebuilds layers from the sub-layer deltas of an archive at the
// destination, keeping one spooled base per set of base layers.
type rebuilder struct {
	a    *archive.Reader
	dir  string
	mu   sync.Mutex
	sets map[string]*baseSet
}

// baseSet is a base built once for the deltas that share its layers. The
// first rebuild to need it builds it, with its context and repository; a
// failure then fails every rebuild that shares the set.
type baseSet struct {
	once sync.Once
	base *sublayer.Base
	err  error
}

func newRebuilder(tempDir string, a *archive.Reader) (*rebuilder, error) {
	dir, err := os.MkdirTemp(tempDir, "imo-push-")
	if err != nil {
		return nil, fmt.Errorf("preparing to rebuild layers: %w", err)
	}
	return &rebuilder{a: a, dir: dir, sets: map[string]*baseSet{}}, nil
}

func (r *rebuilder) close() {
	for _, s := range r.sets {
		if s.base != nil {
			s.base.Close()
		}
	}
	os.RemoveAll(r.dir)
}

// baseFor returns the base the delta dl draws on, building it the first
// time: each base layer comes from the archive when it carries it, or else
// from repo's registry: from the repository vet found it in when repo
// lacks it (mountable), from repo itself otherwise.
func (r *rebuilder) baseFor(ctx context.Context, repo *registry.Repository, dl *archive.PlanDelta, mountable map[v1.Hash]name.Repository) (*sublayer.Base, error) {
	key := ""
	for _, b := range dl.Bases {
		key += b.Digest.String() + ","
	}
	r.mu.Lock()
	set := r.sets[key]
	if set == nil {
		set = &baseSet{}
		r.sets[key] = set
	}
	r.mu.Unlock()
	set.once.Do(func() {
		if set.base, set.err = sublayer.NewBase(r.dir); set.err != nil {
			return
		}
		for _, b := range dl.Bases {
			var src graph.BlobFetcher = repo
			switch {
			case r.a.Has(b.Digest):
				src = r.a
			case mountable[b.Digest] != (name.Repository{}):
				src = repo.In(mountable[b.Digest])
			}
			if set.err = addBase(ctx, set.base, src, repo.Name().String(), b); set.err != nil {
				return
			}
		}
	})
	return set.base, set.err
}

// rebuild rebuilds the blob desc from its delta into a temporary file,
// verified against desc, and returns the file's path and how many bytes of
// base layer contents are spooled on disk for it. Base layers repo lacks
// come from where mountable says.
func (r *rebuilder) rebuild(ctx context.Context, repo *registry.Repository, desc v1.Descriptor, mountable map[v1.Hash]name.Repository) (string, int64, error) {
	dl, delta := r.a.Delta(desc.Digest)
	if dl == nil {
		return "", 0, fmt.Errorf("%w: %s: no delta for %s", ErrInvalidArchive, r.a.Name(), desc.Digest)
	}
	base, err := r.baseFor(ctx, repo, dl, mountable)
	if err != nil {
		return "", 0, err
	}
	out, err := os.CreateTemp(r.dir, "rebuilt-")
	if err != nil {
		return "", 0, fmt.Errorf("rebuilding %s: %w", desc.Digest, err)
	}
	// The blob's size is known: a delta that would write more (a crafted
	// one that expands without end, say) is stopped there.
	_, err = sublayer.Rebuild(ctx, base, delta, &limitedWriter{w: out, left: desc.Size})
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(out.Name())
		if errors.Is(err, sublayer.ErrDigestMismatch) || errors.Is(err, errTooLong) {
			return "", 0, fmt.Errorf("%w: rebuilding %s from the sub-layer delta in %s: %v", ErrDigestMismatch, desc.Digest, r.a.Name(), err)
		}
		return "", 0, fmt.Errorf("rebuilding %s from its sub-layer delta: %w", desc.Digest, err)
	}
	return out.Name(), base.Spooled(), nil
}

// errTooLong means a rebuild wrote more bytes than the blob has.
var errTooLong = errors.New("the rebuilt blob is longer than the layer")

// limitedWriter fails once more than left bytes are written.
type limitedWriter struct {
	w    io.Writer
	left int64
}

func (l *limitedWriter) Write(p []byte) (int, error) {
	if int64(len(p)) > l.left {
		return 0, errTooLong
	}
	l.left -= int64(len(p))
	return l.w.Write(p)
}
