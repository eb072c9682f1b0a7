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

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/imokit/imo/internal/sublayer"
)

// Sub-layer deltas (see WithSublayerDeltas): the pull side expresses a
// changed layer as a delta against base's layers and proves that it
// rebuilds the blob; the push side rebuilds the blob from the base layers
// the destination holds and checks it again before uploading it.

// minDeltaBlob is the smallest layer imo tries a delta for: below it, the
// base downloads cost more than a delta could save.
const minDeltaBlob = 64 << 10

// reasonDelta is why a layer carried as a delta is not carried whole.
const reasonDelta = "carried as a sub-layer delta"

// ErrEncoderMismatch means an archive carries a layer as a sub-layer delta
// whose recipe this build of imo cannot reproduce byte for byte (another
// version of the encoder). Vet and push refuse such an archive before
// uploading anything; pull it again with the same imo version as the push
// side, or without sub-layer deltas.
var ErrEncoderMismatch = errors.New("sub-layer delta needs an encoder this build does not reproduce")

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
// against the layers of the same platform of its image's base (baseOf,
// aligned with pp.images, nil where there is none). The pull downloads
// those base layers and the carried layers into a temporary directory; a
// layer whose delta does not pay is then written into the archive from
// there, not downloaded twice.
func (i *Incremental) prepareDeltas(ctx context.Context, pp *pullPlan, baseOf []*pulledImage) error {
	carried := map[v1.Hash]int{}
	for k, b := range pp.plan.Blobs {
		if b.Included && !b.Config && b.Size >= minDeltaBlob && deltaLayer(b.MediaType) {
			carried[b.Digest] = k
		}
	}
	tried := map[v1.Hash]bool{}
	for n, img := range pp.images {
		if baseOf[n] == nil {
			continue
		}
		for _, m := range img.graph.manifests {
			if !m.desc.MediaType.IsImage() {
				continue
			}
			bm := samePlatform(baseOf[n].graph, m)
			if bm == nil {
				continue
			}
			fm, err := v1.ParseManifest(bytes.NewReader(m.raw))
			if err != nil {
				return fmt.Errorf("parsing manifest %s: %w", m.desc.Digest, err)
			}
			base, err := v1.ParseManifest(bytes.NewReader(bm.raw))
			if err != nil {
				return fmt.Errorf("parsing manifest %s: %w", bm.desc.Digest, err)
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
			if err := i.deltaGroup(ctx, pp, img, baseOf, n, base.Layers, todo, carried); err != nil {
				return err
			}
		}
	}
	return nil
}

// samePlatform is the image manifest of base for m's platform: the one
// with the same platform in base's index, or base itself when both are
// single images.
func samePlatform(base *imageGraph, m manifestNode) *manifestNode {
	if m.desc.Platform == nil {
		if top := base.top(); top.desc.MediaType.IsImage() && top.desc.Platform == nil {
			return &top
		}
		return nil
	}
	for k, bm := range base.manifests {
		if bm.desc.MediaType.IsImage() && bm.desc.Platform != nil && bm.desc.Platform.String() == m.desc.Platform.String() {
			return &base.manifests[k]
		}
	}
	return nil
}

// deltaGroup tries deltas for the layers todo of img, the n-th image,
// against the base layers baseLayers of its base.
func (i *Incremental) deltaGroup(ctx context.Context, pp *pullPlan, img pulledImage, baseOf []*pulledImage, n int, baseLayers, todo []v1.Descriptor, carried map[v1.Hash]int) error {
	base := baseOf[n]
	if pp.tmp == "" {
		dir, err := os.MkdirTemp(i.opts.tempDir, "imo-pull-")
		if err != nil {
			return fmt.Errorf("preparing sub-layer deltas: %w", err)
		}
		pp.tmp, pp.local, pp.deltas = dir, map[v1.Hash]*localFile{}, map[v1.Hash]*localFile{}
	}
	sb, err := sublayer.NewBase(pp.tmp)
	if err != nil {
		return err
	}
	defer sb.Close()
	for _, l := range baseLayers {
		if err := i.addBase(ctx, sb, base.client.blob, base.ref.String(), l); err != nil {
			return err
		}
	}
	byDigest := map[string]v1.Descriptor{}
	for _, l := range baseLayers {
		byDigest[l.Digest.String()] = l
	}
	for _, l := range todo {
		path := filepath.Join(pp.tmp, "blob-"+l.Digest.Hex)
		if err := i.download(ctx, img, l, path); err != nil {
			return err
		}
		f, err := os.Open(path)
		if err != nil {
			return fmt.Errorf("preparing a sub-layer delta of %s: %w", l.Digest, err)
		}
		deltaPath := filepath.Join(pp.tmp, "delta-"+l.Digest.Hex)
		df, err := os.Create(deltaPath)
		if err != nil {
			f.Close()
			return fmt.Errorf("preparing a sub-layer delta of %s: %w", l.Digest, err)
		}
		st, err := sublayer.Prepare(ctx, sb, f, l.Size, l.Digest, df)
		f.Close()
		if cerr := df.Close(); err == nil {
			err = cerr
		}
		if err == nil && !basesShared(pp, baseOf, l.Digest, st.Header.Bases) {
			err = fmt.Errorf("%w: an image using it has a base without the layers the delta draws on", sublayer.ErrNotWorthwhile)
		}
		switch {
		case err == nil:
			os.Remove(path)
			pb := &pp.plan.Blobs[carried[l.Digest]]
			pb.Included, pb.Reason = false, reasonDelta
			pb.Delta = &PlanDelta{Size: st.DeltaSize, DiffID: st.Header.DiffID, Recipe: st.Header.Recipe.String()}
			for _, id := range st.Header.Bases {
				pb.Delta.Bases = append(pb.Delta.Bases, byDigest[id])
			}
			pp.deltas[l.Digest] = &localFile{path: deltaPath, size: st.DeltaSize}
			i.opts.reporter.Report(Event{Kind: BlobSkipped, Ref: img.ref.String(), Digest: l.Digest, MediaType: l.MediaType, Size: l.Size,
				Reason: fmt.Sprintf("%s of %d bytes (%s)", reasonDelta, st.DeltaSize, st.Header.Recipe.String())})
		case errors.Is(err, sublayer.ErrUnsupportedEncoder), errors.Is(err, sublayer.ErrNotWorthwhile):
			os.Remove(deltaPath)
			pp.local[l.Digest] = &localFile{path: path, size: l.Size}
			pp.plan.Blobs[carried[l.Digest]].Reason = "whole, no sub-layer delta: " + err.Error()
		default:
			return fmt.Errorf("preparing a sub-layer delta of %s from %s: %w", l.Digest, img.ref, err)
		}
	}
	return nil
}

// basesShared reports whether every image of the pull that uses the layer
// h has a base holding all the base layers a delta of h draws on: only then
// can each image's destination, which holds its base, rebuild it.
func basesShared(pp *pullPlan, baseOf []*pulledImage, h v1.Hash, bases []string) bool {
	for n, img := range pp.images {
		if _, uses := img.graph.byDigest[h]; !uses {
			continue
		}
		if baseOf[n] == nil {
			return false
		}
		for _, id := range bases {
			b, err := v1.NewHash(id)
			if err != nil {
				return false
			}
			if _, ok := baseOf[n].graph.byDigest[b]; !ok {
				return false
			}
		}
	}
	return true
}

// blobOpener opens a blob, verified against desc as it is read.
type blobOpener func(ctx context.Context, desc v1.Descriptor, report func(int64)) (io.ReadCloser, error)

// addBase adds the base layer l, from open, to sb, and reads it to its end
// so that its digest is checked.
func (i *Incremental) addBase(ctx context.Context, sb *sublayer.Base, open blobOpener, source string, l v1.Descriptor) error {
	rc, err := open(ctx, l, nil)
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
func (i *Incremental) download(ctx context.Context, img pulledImage, l v1.Descriptor, path string) error {
	rc, err := img.client.blob(ctx, l, nil)
	if err != nil {
		return err
	}
	defer rc.Close()
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("downloading %s from %s: %w", l.Digest, img.ref, err)
	}
	_, err = io.Copy(f, rc)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("downloading %s from %s: %w", l.Digest, img.ref, err)
	}
	return nil
}

// rebuilder rebuilds layers from the sub-layer deltas of an archive at the
// destination, keeping one spooled base per set of base layers.
type rebuilder struct {
	i    *Incremental
	a    *archiveFile
	dir  string
	mu   sync.Mutex
	sets map[string]*baseSet
}

// baseSet is a base built once for the deltas that share its layers. The
// first rebuild to need it builds it, with its context and client; a
// failure then fails every rebuild that shares the set.
type baseSet struct {
	once sync.Once
	base *sublayer.Base
	err  error
}

func newRebuilder(i *Incremental, a *archiveFile) (*rebuilder, error) {
	dir, err := os.MkdirTemp(i.opts.tempDir, "imo-push-")
	if err != nil {
		return nil, fmt.Errorf("preparing to rebuild layers: %w", err)
	}
	return &rebuilder{i: i, a: a, dir: dir, sets: map[string]*baseSet{}}, nil
}

func (r *rebuilder) close() {
	for _, s := range r.sets {
		if s.base != nil {
			s.base.Close()
		}
	}
	os.RemoveAll(r.dir)
}

// rebuild rebuilds the blob desc from its delta into a temporary file,
// verified against desc, and returns the file's path and how many bytes of
// base layer contents are spooled on disk for it. The base layers come
// from the archive when it carries them, or else from c's registry: from
// c's repository, or from the repository where vet found them.
func (r *rebuilder) rebuild(ctx context.Context, c *repoClient, desc v1.Descriptor, d *destination) (string, int64, error) {
	dl := r.a.deltas[desc.Digest]
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
			open := c.blob
			switch {
			case r.a.has(b.Digest):
				open = func(_ context.Context, desc v1.Descriptor, report func(int64)) (io.ReadCloser, error) {
					rd, err := r.a.blob(desc, report)
					return io.NopCloser(rd), err
				}
			case !d.present[b.Digest] && d.mountable[b.Digest].RepositoryStr() != "":
				from := *c
				from.repo = d.mountable[b.Digest]
				open = from.blob
			}
			if set.err = r.i.addBase(ctx, set.base, open, c.repo.String(), b); set.err != nil {
				return
			}
		}
	})
	if set.err != nil {
		return "", 0, set.err
	}
	delta, ok := r.a.section(deltaName(desc.Digest))
	if !ok {
		return "", 0, r.a.invalid("no delta for %s", desc.Digest)
	}
	out, err := os.CreateTemp(r.dir, "rebuilt-")
	if err != nil {
		return "", 0, fmt.Errorf("rebuilding %s: %w", desc.Digest, err)
	}
	// The blob's size is known: a delta that would write more (a crafted
	// one that expands without end, say) is stopped there.
	_, err = sublayer.Rebuild(ctx, set.base, delta, &limitedWriter{w: out, left: desc.Size})
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(out.Name())
		if errors.Is(err, sublayer.ErrDigestMismatch) || errors.Is(err, errTooLong) {
			return "", 0, fmt.Errorf("%w: rebuilding %s from the sub-layer delta in %s: %v", ErrDigestMismatch, desc.Digest, r.a.name, err)
		}
		return "", 0, fmt.Errorf("rebuilding %s from its sub-layer delta: %w", desc.Digest, err)
	}
	return out.Name(), set.base.Spooled(), nil
}

// recipeFits reports whether a blob of media type mt can be what encoder
// writes: gzip for the gzip layer types, zstd for the zstd one.
func recipeFits(encoder string, mt types.MediaType) bool {
	switch encoder {
	case sublayer.EncoderGzip, sublayer.EncoderKlauspostGzip, sublayer.EncoderPgzip:
		return mt == types.DockerLayer || mt == types.OCILayer
	case sublayer.EncoderZstd:
		return mt == types.OCILayerZStd
	}
	return false
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

// checkDeltas checks, before anything is sent, that every delta in the
// archive rebuilds a layer of its images (layers lists them), of that
// layer's size, with a recipe that makes its media type and that this
// build reproduces.
func (a *archiveFile) checkDeltas(layers map[v1.Hash]v1.Descriptor) error {
	for h := range a.deltas {
		s, ok := a.section(deltaName(h))
		if !ok {
			return a.invalid("%s says %s is carried as a delta, but there is no %s", PlanFile, h, deltaName(h))
		}
		hdr, err := sublayer.ReadHeader(s)
		if err != nil {
			return a.invalid("the delta of %s: %v", h, err)
		}
		desc, ok := layers[h]
		switch {
		case hdr.Digest != h:
			return a.invalid("the delta in %s rebuilds %s", deltaName(h), hdr.Digest)
		case !ok:
			return a.invalid("%s holds a delta of %s, which no image of the archive uses", deltaName(h), h)
		case hdr.Size != desc.Size || !recipeFits(hdr.Recipe.Encoder, desc.MediaType):
			return a.invalid("the delta of %s makes a %d-byte %s blob, but the layer is a %d-byte %s", h, hdr.Size, hdr.Recipe.Encoder, desc.Size, desc.MediaType)
		}
		if err := sublayer.CheckRecipe(&hdr.Recipe); err != nil {
			return fmt.Errorf("%w: layer %s of %s needs %s: %v", ErrEncoderMismatch, h, a.name, hdr.Recipe.String(), err)
		}
	}
	return nil
}
