package imo_test

import (
	"context"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/imokit/imo"
)

// TestPullFromDockerArchives pulls from tars that skopeo's docker-archive
// transport wrote: the configs and diff IDs stay the registry's, two
// archives share layers by diff ID, and what lands is what imo built.
func TestPullFromDockerArchives(t *testing.T) {
	t.Parallel()
	requireBinary(t, "skopeo")
	ctx := context.Background()
	for _, tc := range cases[:2] { // a docker-archive holds one platform
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			src, pair := setup(t, tc.format, tc.platforms...)
			dir := t.TempDir()
			saved := map[string]string{}
			for _, tag := range []string{"v1", "v2"} {
				saved[tag] = filepath.Join(dir, tag+".tar")
				skopeo(t, "copy", "--src-tls-verify=false", "docker://"+src.ref("app:"+tag), "docker-archive:"+saved[tag]+":app:"+tag)
			}
			inc := imo.New(imo.WithPlainHTTP())
			whole := pullFile(t, inc, imo.Scratch, "docker-archive:"+saved["v1"])
			diff := pullFile(t, inc, "docker-archive:"+saved["v1"], "docker-archive:"+saved["v2"]+":app:v2")
			cf1, _ := pair.V1.(v1.Image).ConfigFile()
			cf2, _ := pair.V2.(v1.Image).ConfigFile()
			want := 1 // the config
			for _, d := range cf2.RootFS.DiffIDs {
				if !slices.Contains(cf1.RootFS.DiffIDs, d) {
					want++
				}
			}
			if got := included(t, diff); len(got) != want {
				t.Errorf("v1→v2 between docker-archives carries %d blobs, want %d (the config and the layers of new diff IDs)", len(got), want)
			}
			dst := newTestRegistry(t, nil)
			for _, step := range []struct{ path, tag string }{{whole, "v1"}, {diff, "v2"}} {
				if err := inc.Push(ctx, step.path, dst.ref("app:"+step.tag)); err != nil {
					t.Fatalf("push of %s: %v", step.tag, err)
				}
			}
			for tag, img := range map[string]v1.Image{"v1": pair.V1.(v1.Image), "v2": pair.V2.(v1.Image)} {
				raw := skopeo(t, "inspect", "--tls-verify=false", "--config", "--raw", "docker://"+dst.ref("app:"+tag))
				wantConfig, _ := img.RawConfigFile()
				if string(raw) != string(wantConfig) {
					t.Errorf("app:%s's config at the far side differs from the registry's", tag)
				}
			}
		})
	}
	t.Run("errors", func(t *testing.T) {
		t.Parallel()
		src, _ := setup(t, docker, "linux/amd64")
		saved := filepath.Join(t.TempDir(), "saved.tar")
		skopeo(t, "copy", "--src-tls-verify=false", "docker://"+src.ref("app:v1"), "docker-archive:"+saved+":app:v1")
		ociTar := filepath.Join(t.TempDir(), "oci.tar")
		skopeo(t, "copy", "--src-tls-verify=false", "docker://"+src.ref("app:v1"), "oci-archive:"+ociTar+":v1")
		for _, tc := range []struct{ final, want string }{
			{"docker-archive:" + saved + ":app:v9", "no image tagged app:v9: it has docker.io/library/app:v1"},
			{"docker-archive:" + ociTar, "OCI layout in a tar; read it as oci-archive:"},
			{"docker-archive:" + filepath.Join(t.TempDir(), "none.tar"), "no such file"},
			{"oci-archive:" + saved, "docker-archive"},
		} {
			_, err := imo.New().Resolve(ctx, imo.Pair{Base: imo.Scratch, Final: tc.final})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("pull of %s = %v, want it to say %q", tc.final, err, tc.want)
			}
		}
	})
}
