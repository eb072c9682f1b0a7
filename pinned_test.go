package imo_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/imokit/imo"
	"github.com/imokit/imo/internal/sandbox"
	"github.com/imokit/imo/inventory"
)

// pinnedHost is the registry name the pinned archives record: every
// request to it goes to the test's registry, so that the archives do not
// depend on the port the registry got.
const pinnedHost = "pinned.example:5000"

// pinnedTransport sends requests for pinnedHost to addr.
func pinnedTransport(addr string) http.RoundTripper {
	t := http.DefaultTransport.(*http.Transport).Clone()
	d := &net.Dialer{}
	t.DialContext = func(ctx context.Context, network, _ string) (net.Conn, error) {
		return d.DialContext(ctx, network, addr)
	}
	return t
}

// TestArchiveBytesPinned checks that the archives imo writes for fixed
// images do not change by a byte: a streamed pull and a pull to a file
// must both hash to the sha256 pinned here. A change to the archive format
// must change these on purpose.
func TestArchiveBytesPinned(t *testing.T) {
	t.Parallel()
	src := newTestRegistry(t, nil)
	ctx := context.Background()
	docker2, err := sandbox.NewAppPair(sandbox.Docker, "linux/amd64", "linux/arm64")
	if err != nil {
		t.Fatal(err)
	}
	oci3, err := sandbox.NewAppPair(sandbox.OCI, "linux/amd64", "linux/arm64/v8", "linux/s390x")
	if err != nil {
		t.Fatal(err)
	}
	product, err := sandbox.NewProduct(sandbox.Docker, []string{"web", "api"}, "linux/amd64")
	if err != nil {
		t.Fatal(err)
	}
	src.write(t, src.ref("docker/app:v1"), docker2.V1)
	src.write(t, src.ref("docker/app:v2"), docker2.V2)
	src.write(t, src.ref("oci/app:v1"), oci3.V1)
	src.write(t, src.ref("oci/app:v2"), oci3.V2)
	for ref, img := range product.Images {
		src.write(t, src.ref("team/"+ref), img)
	}
	// A cosign-tagged SBOM of team/web:v2, found with WithReferrers.
	webV2 := digest(t, product.Images["web:v2"])
	sbom, err := sandbox.SBOM(v1.Descriptor{MediaType: "application/vnd.docker.distribution.manifest.v2+json", Digest: webV2, Size: 1}, []byte(`{"spdxVersion":"SPDX-2.3","name":"web"}`))
	if err != nil {
		t.Fatal(err)
	}
	src.write(t, src.ref("team/web:sha256-"+webV2.Hex+".sbom"), sbom)
	// The far side's inventory: it holds api:v1 (and so the shared base).
	apiV1 := digest(t, product.Images["api:v1"])
	have := &inventory.Inventory{
		Version: inventory.Version, Registry: "site.example:5000", Prefix: "mirror",
		Taken: time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC), Took: time.Second,
		Repositories: []inventory.Repository{{Name: "mirror/team/api", Tags: []string{"v1"}}},
		Blobs:        []inventory.Blob{{Digest: apiV1, Size: 1, Kind: inventory.KindManifest, Repositories: []string{"mirror/team/api"}}},
	}
	for _, b := range product.Base {
		have.Blobs = append(have.Blobs, inventory.Blob{Digest: b, Size: 1, Kind: inventory.KindLayer, Repositories: []string{"mirror/team/api"}})
	}
	sortInventory(have)
	// A rebuilt layer, for a sub-layer delta.
	rebuildPair(t, sandbox.Docker, src.Host+"/rebuilt", func(b []byte) v1.Layer { return compressed(t, encoders[0], b) })

	ref := func(repo string) string { return pinnedHost + "/" + repo }
	base := []imo.Option{imo.WithPlainHTTP(), imo.WithTransport(pinnedTransport(src.Host)), imo.WithTempDir(t.TempDir())}
	tests := []struct {
		name   string
		opts   []imo.Option
		pairs  []imo.Pair
		bundle bool
		want   string
		holds  []string // what the archive must show it exercised
	}{
		{"delta, Docker, two platforms", nil, []imo.Pair{{Base: ref("docker/app:v1"), Final: ref("docker/app:v2")}}, false, "1f12aa1a8fde476033113ba9a836ebda6b33d5729dbd01f4eb1c684c17e9ce74", nil},
		{"whole, OCI, three platforms", nil, []imo.Pair{{Base: imo.Scratch, Final: ref("oci/app:v2")}}, false, "1165a14d8324be0c89b1c47a3483b561506997b5cd7f4aa9bb94677e9736d405", nil},
		{"whole, one platform of an index", []imo.Option{imo.WithPlatforms(v1.Platform{OS: "linux", Architecture: "arm64"})}, []imo.Pair{{Base: imo.Scratch, Final: ref("oci/app:v2")}}, false, "3618d33b9044fbee4a09ed4a5a7a0ce48764bc0eb4856975654fcc7aa504f9a6", nil},
		{"delta, two of three platforms", []imo.Option{imo.WithPlatforms(v1.Platform{OS: "linux", Architecture: "amd64"}, v1.Platform{OS: "linux", Architecture: "s390x"})}, []imo.Pair{{Base: ref("oci/app:v1"), Final: ref("oci/app:v2")}}, false, "20c1ee904de1ad51f6e1061dab1d80c8fe70a482a89181398fe40b3df0d28f5c", nil},
		{"bundle, referrers, inventory", []imo.Option{imo.WithReferrers(), imo.WithHave(have)}, []imo.Pair{
			{Base: ref("team/web:v1"), Final: ref("team/web:v2")},
			{Base: imo.Scratch, Final: ref("team/api:v3")},
		}, true, "b8a72214e1719bdcc3e84cc81f71ea3add7f7a97a43ca46389aeafb5ee3bb009", []string{".sbom", "in the inventory of site.example:5000/mirror", `"bundle": true`}},
		{"bundle of one pair", nil, []imo.Pair{{Base: ref("team/web:v2"), Final: ref("team/web:v3")}}, true, "283b65fb5aa61e9c7145ccab9161ae6c99ed79a803f911efcc02738f622398e9", []string{`"bundle": true`}},
		{"sub-layer delta", []imo.Option{imo.WithSublayerDeltas()}, []imo.Pair{{Base: ref("rebuilt/app:v1"), Final: ref("rebuilt/app:v2")}}, false, "b3ad73446dd4a49c3401fa76a2e90b9b64c6e5abf7b209ae4bb14eda6330bc34", []string{"imo-deltas/sha256/", `"digest": "sha256:`}}, // the plan names each delta's digest since archives are signed
		{"signed with Ed25519", []imo.Option{imo.WithSigner(ed25519.NewKeyFromSeed(bytes.Repeat([]byte{7}, ed25519.SeedSize)))}, []imo.Pair{{Base: ref("docker/app:v1"), Final: ref("docker/app:v2")}}, false, "5e9320fd2c54c603fa827811814100687bdd6d5cf34c0939ddf810cc55b9f85c", []string{"imo.json.sig", `"signer": "`}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			inc := imo.New(append(append([]imo.Option{}, base...), tc.opts...)...)
			var stream io.ReadCloser
			var err error
			path := filepath.Join(t.TempDir(), "archive.tar")
			if tc.bundle {
				stream, err = pullBundle(ctx, inc, tc.pairs)
				if err == nil {
					_, err = pullBundleToFile(ctx, inc, tc.pairs, path)
				}
			} else {
				stream, err = inc.Pull(ctx, tc.pairs[0].Base, tc.pairs[0].Final)
				if err == nil {
					_, err = pullToFile(ctx, inc, tc.pairs[0].Base, tc.pairs[0].Final, path)
				}
			}
			if err != nil {
				t.Fatal(err)
			}
			var streamed bytes.Buffer
			if _, err := io.Copy(&streamed, stream); err != nil {
				t.Fatal(err)
			}
			stream.Close()
			file, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			got := sha256.Sum256(file)
			if !bytes.Equal(streamed.Bytes(), file) {
				t.Errorf("the streamed archive differs from the file")
			}
			for _, h := range tc.holds {
				if !bytes.Contains(file, []byte(h)) {
					t.Errorf("the archive does not hold %q", h)
				}
			}
			if hex.EncodeToString(got[:]) != tc.want {
				t.Errorf("the archive's sha256 is %x, pinned %s", got, tc.want)
			}
		})
	}
}

// sortInventory sorts an inventory's blobs by digest, as Blob expects.
func sortInventory(inv *inventory.Inventory) {
	slices.SortFunc(inv.Blobs, func(a, b inventory.Blob) int { return strings.Compare(a.Digest.String(), b.Digest.String()) })
}
