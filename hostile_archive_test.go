package imo_test

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/imokit/imo"
	"github.com/imokit/imo/internal/sandbox"
)

// rewriteArchive rewrites the tar at path, passing every regular entry
// through edit (which may change its content).
func rewriteArchive(t *testing.T, path string, edit func(name string, b []byte) []byte) {
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
			b = edit(h.Name, b)
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
func editPlan(t *testing.T, path string, edit func(p *imo.Plan)) {
	t.Helper()
	rewriteArchive(t, path, func(name string, b []byte) []byte {
		if name != imo.PlanFile {
			return b
		}
		var p imo.Plan
		if err := json.Unmarshal(b, &p); err != nil {
			t.Fatal(err)
		}
		edit(&p)
		nb, err := json.Marshal(&p)
		if err != nil {
			t.Fatal(err)
		}
		return nb
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
	// go-containerregistry accepts "host/mirror/../../admin/app"; pushed
	// under a prefix it must not land outside it.
	path, _ := twoImageBundle(t)
	editPlan(t, path, func(p *imo.Plan) { p.Images[1].Final.Reference = "example.com/mirror/../../admin/app:v2" })
	dst := newTestRegistry(t, nil)
	_, err := imo.New(imo.WithPlainHTTP()).PushArchive(context.Background(), path, dst.Host+"/mirror")
	if !errors.Is(err, imo.ErrInvalidTarget) {
		t.Errorf("PushArchive() = %v, want ErrInvalidTarget", err)
	}
	if _, err := headDigest(dst.Host + "/admin/app:v2"); err == nil {
		t.Errorf("the push wrote %s/admin/app:v2, outside the prefix", dst.Host)
	}
}

func TestPushRefusesForgedArtifact(t *testing.T) {
	// imo.json marks the second image as an artifact of the first, under
	// a tag no signature has: push must not tag it in the first's
	// repository.
	path, p := twoImageBundle(t)
	for _, forged := range []string{"anything/whatever:latest", "anything/whatever:sha256-0000.sig", "example.com/x@sha256:" + digest(t, p.Images["api:v2"]).Hex} {
		t.Run(forged, func(t *testing.T) {
			forgedPath := filepath.Join(t.TempDir(), "forged.tar")
			b, _ := os.ReadFile(path)
			os.WriteFile(forgedPath, b, 0o644)
			editPlan(t, forgedPath, func(plan *imo.Plan) {
				plan.Images[1].Subject = digest(t, p.Images["web:v2"])
				plan.Images[1].Final.Reference = forged
			})
			dst := newTestRegistry(t, nil)
			_, err := imo.New(imo.WithPlainHTTP()).PushArchive(context.Background(), forgedPath, dst.ref("app:v2"))
			if !errors.Is(err, imo.ErrInvalidArchive) {
				t.Errorf("PushArchive() = %v, want ErrInvalidArchive", err)
			}
			if _, err := remote.Head(mustRef(t, dst.ref("app:latest"))); err == nil {
				t.Errorf("the push tagged app:latest with an image that refers to nothing")
			}
		})
	}
}
