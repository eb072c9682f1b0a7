package imo_test

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	kgzip "github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	"github.com/klauspost/pgzip"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/imokit/imo"
	"github.com/imokit/imo/archive"
	"github.com/imokit/imo/internal/sandbox"
)

// layerFile is one file of a test layer.
type layerFile struct {
	name    string
	content string
}

// appFiles are the files of an application layer: text of many sizes.
func appFiles(version string, n int) []layerFile {
	var fs []layerFile
	for k := range n {
		fs = append(fs, layerFile{fmt.Sprintf("opt/app/lib/part%03d.txt", k), sandbox.Text(fmt.Sprint("part", k), 8<<10+(k%7)*8<<10)})
	}
	return append(fs, layerFile{"opt/app/VERSION", version})
}

// rebuild is v1's files rebuilt: two changed, two added, two removed.
func rebuild(files []layerFile) []layerFile {
	out := append([]layerFile(nil), files[2:]...)
	out[0].content = sandbox.Text("changed 0", len(out[0].content))
	out[5].content += "a line added in v2\n"
	out = append(out, layerFile{"opt/app/lib/new1.txt", sandbox.Text("new1", 12<<10)}, layerFile{"opt/app/lib/new2.txt", sandbox.Text("new2", 20<<10)})
	out[len(out)-3].content = "2.0.0"
	return out
}

// tarOf writes files into a tar, with the modification time mtime.
func tarOf(t *testing.T, files []layerFile, mtime time.Time) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, f := range files {
		if err := tw.WriteHeader(&tar.Header{Name: f.name, Mode: 0o644, Size: int64(len(f.content)), ModTime: mtime, Typeflag: tar.TypeReg, Uname: "root", Gname: "root"}); err != nil {
			t.Fatal(err)
		}
		io.WriteString(tw, f.content)
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// encoder compresses a tar as one producer of layers does.
type encoder struct {
	name     string
	mt       types.MediaType
	compress func(io.Writer) (io.WriteCloser, error)
}

var encoders = []encoder{
	{"go gzip 6 (docker, buildkit)", types.DockerLayer, func(w io.Writer) (io.WriteCloser, error) { return gzip.NewWriterLevel(w, 6) }},
	{"go gzip 1 (go-containerregistry, ko)", types.OCILayer, func(w io.Writer) (io.WriteCloser, error) { return gzip.NewWriterLevel(w, gzip.BestSpeed) }},
	{"go gzip 9", types.DockerLayer, func(w io.Writer) (io.WriteCloser, error) { return gzip.NewWriterLevel(w, gzip.BestCompression) }},
	{"klauspost gzip", types.DockerLayer, func(w io.Writer) (io.WriteCloser, error) { return kgzip.NewWriter(w), nil }},
	{"pgzip (podman, buildah)", types.OCILayer, func(w io.Writer) (io.WriteCloser, error) { return pgzip.NewWriter(w), nil }},
	{"zstd", types.OCILayerZStd, func(w io.Writer) (io.WriteCloser, error) { return zstd.NewWriter(w) }},
}

// compressed returns a layer of the tar compressed by e.
func compressed(t *testing.T, e encoder, tarball []byte) v1.Layer {
	t.Helper()
	var buf bytes.Buffer
	zw, err := e.compress(&buf)
	if err != nil {
		t.Fatal(err)
	}
	for b := tarball; len(b) > 0; { // Write only, in uneven pieces
		n := min(len(b), 100_003)
		if _, err := zw.Write(b[:n]); err != nil {
			t.Fatal(err)
		}
		b = b[n:]
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return layerOf(t, buf.Bytes(), e.mt)
}

func layerOf(t *testing.T, b []byte, mt types.MediaType) v1.Layer {
	t.Helper()
	l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil }, tarball.WithMediaType(mt))
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// rebuildPair writes app:v1 and app:v2 to src: an unchanged OS layer, then
// an application layer that v2 rebuilt with new times and a few changed,
// added and removed files, both made by app.
func rebuildPair(t *testing.T, f sandbox.Format, src string, app func([]byte) v1.Layer) (v1s, v2s v1.Image, appV2 v1.Layer) {
	t.Helper()
	osLayer, err := sandbox.Layer(f.Layer, "etc/os-release", "ID=sampleos\n", "usr/share/doc/os.txt", sandbox.Text("os", 96<<10))
	if err != nil {
		t.Fatal(err)
	}
	files := appFiles("1.0.0", 120)
	appV1 := app(tarOf(t, files, time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)))
	appV2 = app(tarOf(t, rebuild(files), time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)))
	p := v1.Platform{OS: "linux", Architecture: "amd64"}
	if v1s, err = f.Image(p, osLayer, appV1); err != nil {
		t.Fatal(err)
	}
	if v2s, err = f.Image(p, osLayer, appV2); err != nil {
		t.Fatal(err)
	}
	writeTo(t, src+"/app:v1", v1s)
	writeTo(t, src+"/app:v2", v2s)
	return v1s, v2s, appV2
}

func TestSublayerDeltas(t *testing.T) {
	t.Parallel()
	for _, e := range encoders {
		t.Run(e.name, func(t *testing.T) {
			src, dst := newTestRegistry(t, nil), newTestRegistry(t, nil)
			f := sandbox.Docker
			if e.mt != types.DockerLayer {
				f = sandbox.OCI
			}
			v1s, v2s, appV2 := rebuildPair(t, f, src.Host, func(b []byte) v1.Layer { return compressed(t, e, b) })
			dst.write(t, dst.ref("app:v1"), v1s)
			ctx := context.Background()
			inc := imo.New(imo.WithPlainHTTP(), imo.WithSublayerDeltas(), imo.WithTempDir(t.TempDir()))
			path := filepath.Join(t.TempDir(), "delta.tar")
			plan, err := pullToFile(ctx, inc, src.ref("app:v1"), src.ref("app:v2"), path)
			if err != nil {
				t.Fatalf("PullToFile() = %v", err)
			}
			h := digest(t, appV2)
			var pb *archive.PlanBlob
			for k := range plan.Blobs {
				if plan.Blobs[k].Digest == h {
					pb = &plan.Blobs[k]
				}
			}
			if pb == nil || pb.Delta == nil {
				t.Fatalf("the rebuilt layer is not carried as a delta: %+v", pb)
			}
			ratio := float64(pb.Delta.Size) / float64(pb.Size)
			t.Logf("%s: delta %d bytes for a %d-byte layer (%.1f%%), %s", e.name, pb.Delta.Size, pb.Size, 100*ratio, pb.Delta.Recipe)
			if ratio > 0.2 {
				t.Errorf("the delta is %.1f%% of the layer, want well under 20%%", 100*ratio)
			}
			b, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			names := tarNames(t, b)
			if hasBlob(names, h) || !contains(names, "imo-deltas/sha256/"+h.Hex) {
				t.Errorf("the archive should hold the delta and not the layer: %v", names)
			}

			// The push rebuilds the exact blob from the base layers the
			// destination holds.
			results, err := pushArchive(ctx, inc, path, dst.ref("app:v2"))
			if err != nil {
				t.Fatalf("PushArchive() = %v", err)
			}
			if results[0].Digest != digest(t, v2s) {
				t.Errorf("pushed %s, want %s", results[0].Digest, digest(t, v2s))
			}
			if n := dst.count(http.MethodPut, "digest="+h.String()); n != 1 {
				t.Errorf("the rebuilt layer was uploaded %d times, want 1", n)
			}
			if !equalManifests(manifests(t, dst.ref("app:v2")), manifests(t, src.ref("app:v2"))) {
				t.Errorf("the manifests at the destination differ from the source's")
			}
			inspected, err := archive.Inspect(ctx, path)
			if err != nil {
				t.Fatalf("Inspect() = %v", err)
			}
			pulledBytes, _ := plan.Bytes()
			if got, _ := inspected.Bytes(); got != pulledBytes {
				t.Errorf("Inspect() counts %d carried bytes, the pull's plan %d", got, pulledBytes)
			}

			// A destination without the base cannot rebuild the layer: vet
			// names the base layer the delta needs.
			ls, err := v1s.Layers()
			if err != nil {
				t.Fatal(err)
			}
			appV1 := digest(t, ls[1])
			err = inc.PushVet(ctx, path, newTestRegistry(t, nil).ref("app:v2"))
			var missing *imo.MissingBlobsError
			if !errors.As(err, &missing) {
				t.Fatalf("PushVet(empty) = %v, want missing blobs", err)
			}
			named := false
			for _, m := range missing.Blobs {
				named = named || (m.Digest == appV1 && strings.Contains(strings.Join(m.NeededBy, " "), "sub-layer delta of "+h.String()))
			}
			if !named {
				t.Errorf("PushVet(empty) = %v; want v1's layer %s named as needed by the delta", err, appV1)
			}
		})
	}
}

func TestSublayerUnsupportedEncoder(t *testing.T) {
	t.Parallel()
	// Two gzip members, as parallel compressors write: no encoder imo knows
	// reproduces it, so the whole layer ships.
	twoMembers := func(b []byte) v1.Layer {
		var buf bytes.Buffer
		for _, half := range [][]byte{b[:len(b)/2], b[len(b)/2:]} {
			zw := gzip.NewWriter(&buf)
			zw.Write(half)
			zw.Close()
		}
		return layerOf(t, buf.Bytes(), types.DockerLayer)
	}
	src := newTestRegistry(t, nil)
	_, _, appV2 := rebuildPair(t, sandbox.Docker, src.Host, twoMembers)
	inc := imo.New(imo.WithPlainHTTP(), imo.WithSublayerDeltas(), imo.WithTempDir(t.TempDir()))
	b, err := pull(t, inc, src.ref("app:v1"), src.ref("app:v2"))
	if err != nil {
		t.Fatalf("Pull() = %v", err)
	}
	if !hasBlob(tarNames(t, b), digest(t, appV2)) {
		t.Errorf("the layer from an unknown encoder is not carried whole")
	}
	// The plan, and so the dry run, says why.
	plan, err := planOf(context.Background(), inc, src.ref("app:v1"), src.ref("app:v2"))
	if err != nil {
		t.Fatal(err)
	}
	for _, pb := range plan.Blobs {
		if pb.Digest == digest(t, appV2) && (!pb.Included || !strings.Contains(string(pb.Reason), "no sub-layer delta")) {
			t.Errorf("the plan carries the layer with reason %q, want why it has no delta", pb.Reason)
		}
	}
}

func TestSublayerEncoderMismatch(t *testing.T) {
	t.Parallel()
	// An archive whose delta names an encoder version this build does not
	// have is refused before anything is uploaded.
	src, dst := newTestRegistry(t, nil), newTestRegistry(t, nil)
	v1s, _, _ := rebuildPair(t, sandbox.Docker, src.Host, func(b []byte) v1.Layer { return compressed(t, encoders[0], b) })
	dst.write(t, dst.ref("app:v1"), v1s)
	inc := imo.New(imo.WithPlainHTTP(), imo.WithSublayerDeltas(), imo.WithTempDir(t.TempDir()))
	b, err := pull(t, inc, src.ref("app:v1"), src.ref("app:v2"))
	if err != nil {
		t.Fatal(err)
	}
	at := bytes.Index(b, []byte(`"version":"go1.`))
	if at < 0 {
		t.Fatal("no Go gzip recipe in the archive")
	}
	b[at+len(`"version":"go1.`)] = '9' // go1.26.8 → go1.96.8
	path := filepath.Join(t.TempDir(), "tampered.tar")
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	dst.resetCounts()
	_, err = pushArchive(context.Background(), inc, path, dst.ref("app:v2"))
	if !errors.Is(err, imo.ErrEncoderMismatch) {
		t.Errorf("PushArchive() = %v, want ErrEncoderMismatch", err)
	}
	if n := dst.count(http.MethodPost, "") + dst.count(http.MethodPut, ""); n != 0 {
		t.Errorf("PushArchive() sent %d POST/PUT requests before refusing", n)
	}
}

func contains(names []string, name string) bool {
	for _, n := range names {
		if n == name {
			return true
		}
	}
	return false
}

func TestSublayerDeltaSharedAcrossBases(t *testing.T) {
	t.Parallel()
	// other:v1 (base scratch) has app:v2's rebuilt layer too: its
	// destination holds no base to rebuild it from, so the layer ships
	// whole, and both images push.
	src := newTestRegistry(t, nil)
	v1s, _, appV2 := rebuildPair(t, sandbox.Docker, src.Host, func(b []byte) v1.Layer { return compressed(t, encoders[0], b) })
	other, err := sandbox.Docker.Image(v1.Platform{OS: "linux", Architecture: "amd64"}, appV2)
	if err != nil {
		t.Fatal(err)
	}
	writeTo(t, src.ref("other:v1"), other)
	pairs := []imo.Pair{{Base: src.ref("app:v1"), Final: src.ref("app:v2")}, {Base: imo.Scratch, Final: src.ref("other:v1")}}
	inc := imo.New(imo.WithPlainHTTP(), imo.WithTempDir(t.TempDir()), imo.WithSublayerDeltas())
	path := pullBundleFile(t, inc, pairs)
	if deltas(t, path) != 0 {
		t.Errorf("the shared layer travels as a delta")
	}
	dst := newTestRegistry(t, nil)
	dst.write(t, dst.ref("app:v1"), v1s)
	if _, err := pushArchive(context.Background(), inc, path, dst.Host+"/"); err != nil {
		t.Errorf("PushArchive() = %v", err)
	}
}

// noMountProxy fronts a registry as one without cross-repository mounts:
// it drops ?mount=&from=, so the registry opens an upload instead.
func noMountProxy(t *testing.T, host string) string {
	rp := httputil.NewSingleHostReverseProxy(&url.URL{Scheme: "http", Host: host})
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost && r.URL.Query().Get("mount") != "" {
			r.URL.RawQuery = ""
		}
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(s.Close)
	return strings.TrimPrefix(s.URL, "http://")
}

func TestSublayerWithoutMounts(t *testing.T) {
	t.Parallel()
	// Two repositories need the same rebuilt layer from a registry that
	// cannot mount: the layer is rebuilt once and uploaded to each.
	src := newTestRegistry(t, nil)
	v1s, v2s, appV2 := rebuildPair(t, sandbox.Docker, src.Host, func(b []byte) v1.Layer { return compressed(t, encoders[0], b) })
	writeTo(t, src.ref("app2:v1"), v1s)
	writeTo(t, src.ref("app2:v2"), v2s)
	pairs := []imo.Pair{{Base: src.ref("app:v1"), Final: src.ref("app:v2")}, {Base: src.ref("app2:v1"), Final: src.ref("app2:v2")}}
	inc := imo.New(imo.WithPlainHTTP(), imo.WithTempDir(t.TempDir()), imo.WithSublayerDeltas())
	path := pullBundleFile(t, inc, pairs)
	if deltas(t, path) != 1 {
		t.Fatalf("the rebuilt layer does not travel as a delta")
	}
	dst := newTestRegistry(t, nil)
	dst.write(t, dst.ref("app:v1"), v1s)
	dst.write(t, dst.ref("app2:v1"), v1s)
	if _, err := pushArchive(context.Background(), inc, path, noMountProxy(t, dst.Host)+"/"); err != nil {
		t.Errorf("PushArchive() = %v", err)
	}
	if n := dst.count(http.MethodPut, "digest="+digest(t, appV2).String()); n != 2 {
		t.Errorf("the rebuilt layer was uploaded %d times, want once per repository", n)
	}
}

// deltas counts the layers the archive at path carries as deltas.
func deltas(t *testing.T, path string) int {
	t.Helper()
	plan, err := archive.Inspect(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, b := range plan.Blobs {
		if b.Delta != nil {
			n++
		}
	}
	return n
}
