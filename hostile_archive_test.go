package imo_test

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/imokit/imo"
	"github.com/imokit/imo/archive"
	"github.com/imokit/imo/internal/sandbox"
	"github.com/imokit/imo/internal/sublayer"
	"github.com/klauspost/compress/zstd"
)

// rewriteArchive rewrites the tar at path, passing every regular entry
// through edit (which may rename it and change its content).
func rewriteArchive(t *testing.T, path string, edit func(name string, b []byte) (string, []byte)) {
	t.Helper()
	in, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	tw := tar.NewWriter(&out)
	tr := tar.NewReader(bytes.NewReader(in))
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		if h.Typeflag == tar.TypeReg {
			h.Name, b = edit(h.Name, b)
			h.Size = int64(len(b))
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		tw.Write(b)
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, out.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
}

// editPlan rewrites imo.json in the archive at path.
func editPlan(t *testing.T, path string, edit func(p *archive.Plan)) {
	t.Helper()
	rewriteArchive(t, path, func(name string, b []byte) (string, []byte) {
		if name != archive.PlanFile {
			return name, b
		}
		var p archive.Plan
		if err := json.Unmarshal(b, &p); err != nil {
			t.Fatal(err)
		}
		edit(&p)
		nb, err := json.Marshal(&p)
		if err != nil {
			t.Fatal(err)
		}
		return name, nb
	})
}

// twoImageBundle pulls web:v2 and api:v2, whole, into a bundle.
func twoImageBundle(t *testing.T) (string, *sandbox.Product) {
	t.Helper()
	src := newTestRegistry(t, nil)
	p, err := sandbox.NewProduct(sandbox.OCI, []string{"web", "api"}, "linux/amd64")
	if err != nil {
		t.Fatal(err)
	}
	src.write(t, src.ref("team/web:v2"), p.Images["web:v2"])
	src.write(t, src.ref("team/api:v2"), p.Images["api:v2"])
	return pullBundleFile(t, imo.New(imo.WithPlainHTTP()), []imo.Pair{
		{Base: imo.Scratch, Final: src.ref("team/web:v2")},
		{Base: imo.Scratch, Final: src.ref("team/api:v2")},
	}), p
}

func TestPushRefusesPrefixEscape(t *testing.T) {
	t.Parallel()
	// go-containerregistry accepts "host/mirror/../../admin/app"; pushed
	// under a prefix it must not land outside it.
	path, _ := twoImageBundle(t)
	editPlan(t, path, func(p *archive.Plan) { p.Images[1].Final.Reference = "example.com/mirror/../../admin/app:v2" })
	dst := newTestRegistry(t, nil)
	_, err := pushArchive(context.Background(), imo.New(imo.WithPlainHTTP()), path, dst.Host+"/mirror")
	if !errors.Is(err, imo.ErrInvalidTarget) {
		t.Errorf("PushArchive() = %v, want ErrInvalidTarget", err)
	}
	if _, err := headDigest(dst.Host + "/admin/app:v2"); err == nil {
		t.Errorf("the push wrote %s/admin/app:v2, outside the prefix", dst.Host)
	}
}

func TestPushRefusesForgedArtifact(t *testing.T) {
	t.Parallel()
	// imo.json marks the second image as an artifact of the first, under
	// a tag no signature has: push must not tag it in the first's
	// repository.
	path, p := twoImageBundle(t)
	for _, forged := range []string{"anything/whatever:latest", "anything/whatever:sha256-0000.sig", "example.com/x@sha256:" + digest(t, p.Images["api:v2"]).Hex} {
		t.Run(forged, func(t *testing.T) {
			forgedPath := filepath.Join(t.TempDir(), "forged.tar")
			b, _ := os.ReadFile(path)
			os.WriteFile(forgedPath, b, 0o644)
			editPlan(t, forgedPath, func(plan *archive.Plan) {
				plan.Images[1].Subject = digest(t, p.Images["web:v2"])
				plan.Images[1].Final.Reference = forged
			})
			dst := newTestRegistry(t, nil)
			_, err := pushArchive(context.Background(), imo.New(imo.WithPlainHTTP()), forgedPath, dst.Host+"/mirror")
			if !errors.Is(err, imo.ErrInvalidArchive) {
				t.Errorf("PushArchive() = %v, want ErrInvalidArchive", err)
			}
			if _, err := remote.Head(mustRef(t, dst.ref("mirror/team/web:latest"))); err == nil {
				t.Errorf("the push tagged mirror/team/web:latest with an image that refers to nothing")
			}
		})
	}
}

// forgeDelta replaces the carried layer h of the archive at path by a
// delta with the given recipe that references the base content content
// (of the base layer base) n times over: far more bytes than the layer.
func forgeDelta(t *testing.T, path string, h v1.Hash, base v1.Hash, content string, recipe map[string]any, n int) {
	t.Helper()
	sum := sha256.Sum256([]byte(content))
	hdr, err := json.Marshal(map[string]any{
		"digest": h.String(), "size": 4503, "diffID": "sha256:" + strings.Repeat("0", 64), "tarSize": 4503,
		"recipe": recipe, "bases": []string{base.String()},
	})
	if err != nil {
		t.Fatal(err)
	}
	var delta bytes.Buffer
	delta.WriteString("imo-sublayer\x00\x01")
	delta.Write(binary.AppendUvarint(nil, uint64(len(hdr))))
	delta.Write(hdr)
	zw, _ := zstd.NewWriter(&delta)
	for range n {
		zw.Write(binary.AppendUvarint(append([]byte{0x02}, sum[:]...), uint64(len(content))))
	}
	zw.Write([]byte{0x00})
	zw.Close()

	var baseDesc v1.Descriptor
	editPlan(t, path, func(p *archive.Plan) {
		for _, b := range p.Blobs {
			if b.Digest == base {
				baseDesc = v1.Descriptor{MediaType: b.MediaType, Digest: b.Digest, Size: b.Size}
			}
		}
		for k, b := range p.Blobs {
			if b.Digest == h {
				p.Blobs[k].Included = false
				p.Blobs[k].Delta = &archive.PlanDelta{Size: int64(delta.Len()), DiffID: h, Recipe: "forged", Bases: []v1.Descriptor{baseDesc}}
			}
		}
	})
	rewriteArchive(t, path, func(name string, b []byte) (string, []byte) {
		if name == "blobs/sha256/"+h.Hex {
			return "imo-deltas/sha256/" + h.Hex, delta.Bytes()
		}
		return name, b
	})
}

func TestPushStopsExpandingDelta(t *testing.T) {
	t.Parallel()
	// A delta of a few hundred bytes that would rebuild 500 MB for a
	// 4503-byte layer: refused when its recipe cannot make that layer's
	// media type, and stopped at the layer's size when it can.
	for _, tc := range []struct {
		name   string
		recipe map[string]any
		want   string
	}{
		{"no compression for a gzip layer", map[string]any{"encoder": "none", "version": "", "level": 0}, "makes a 4503-byte none blob"},
		{"gzip", map[string]any{"encoder": "gzip", "version": runtime.Version(), "level": 1}, "grows past the size the header declares"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src, dst := newTestRegistry(t, nil), newTestRegistry(t, nil)
			pair := newAppPair(t, sandbox.OCI, "linux/amd64")
			src.write(t, src.ref("app:v1"), pair.V1)
			src.write(t, src.ref("app:v2"), pair.V2)
			dst.write(t, dst.ref("app:v1"), pair.V1)
			path := pullFile(t, imo.New(imo.WithPlainHTTP()), src.ref("app:v1"), src.ref("app:v2"))
			forgeDelta(t, path, pair.Changed[0], pair.Shared[0], sandbox.Text("os linux/amd64", 128<<10), tc.recipe, 4000)
			tmp := t.TempDir()
			dst.resetCounts()
			_, err := pushArchive(context.Background(), imo.New(imo.WithPlainHTTP(), imo.WithTempDir(tmp)), path, dst.ref("app:v2"))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("PushArchive() = %v, want an error saying %q", err, tc.want)
			}
			if n := dst.count("PUT", "digest="+pair.Changed[0].String()); n != 0 {
				t.Errorf("the forged layer was uploaded %d times", n)
			}
			if _, err := headDigest(dst.ref("app:v2")); err == nil {
				t.Errorf("app:v2 was tagged")
			}
		})
	}
}

type countingWriter struct{ n int64 }

func (c *countingWriter) Write(p []byte) (int, error) { c.n += int64(len(p)); return len(p), nil }

func TestRebuildStopsAtTarSize(t *testing.T) {
	// 256 references to a 1 MiB base file in a delta whose header says
	// the tar is 1 MiB: the rebuild stops at 1 MiB.
	const fileSize = 1 << 20
	var tb bytes.Buffer
	tw := tar.NewWriter(&tb)
	tw.WriteHeader(&tar.Header{Name: "zero", Mode: 0o644, Size: fileSize, Typeflag: tar.TypeReg})
	tw.Write(make([]byte, fileSize))
	tw.Close()
	base, err := sublayer.NewBase(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer base.Close()
	ls := sha256.Sum256(tb.Bytes())
	id := "sha256:" + hex.EncodeToString(ls[:])
	if err := base.AddLayer(context.Background(), bytes.NewReader(tb.Bytes()), id); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(make([]byte, fileSize))
	hdr, _ := json.Marshal(map[string]any{
		"digest": "sha256:" + strings.Repeat("b", 64), "size": 1 << 20,
		"diffID": "sha256:" + strings.Repeat("c", 64), "tarSize": 1 << 20,
		"recipe": map[string]any{"encoder": sublayer.EncoderNone, "version": "", "level": 0},
		"bases":  []string{id},
	})
	var delta bytes.Buffer
	delta.WriteString("imo-sublayer\x00\x01")
	delta.Write(binary.AppendUvarint(nil, uint64(len(hdr))))
	delta.Write(hdr)
	zw, _ := zstd.NewWriter(&delta)
	for range 256 {
		zw.Write([]byte{0x02})
		zw.Write(sum[:])
		zw.Write(binary.AppendUvarint(nil, fileSize))
	}
	zw.Write([]byte{0x00})
	zw.Close()
	var out countingWriter
	_, err = sublayer.Rebuild(context.Background(), base, bytes.NewReader(delta.Bytes()), &out)
	if err == nil || out.n > 1<<20 {
		t.Errorf("a %d-byte delta declaring a 1 MiB tar made Rebuild write %d bytes (%v); want it stopped at 1 MiB", delta.Len(), out.n, err)
	}
}
