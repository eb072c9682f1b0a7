package inventory

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"slices"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

func sampleInventory() *Inventory {
	h := func(c byte) v1.Hash { return v1.Hash{Algorithm: "sha256", Hex: strings.Repeat(string(c), 64)} }
	return &Inventory{
		Version:  Version,
		Registry: "site-registry:5000",
		Prefix:   "mirror",
		Taken:    time.Date(2026, 11, 23, 2, 0, 0, 0, time.UTC),
		Took:     1234 * time.Millisecond,
		Repositories: []Repository{
			{Name: "mirror/team/app", Tags: []string{"v1", "v2"}},
			{Name: "mirror/team/tool", Tags: []string{}},
		},
		Blobs: []Blob{
			{Digest: h('1'), Size: 529, Kind: KindManifest, MediaType: types.DockerManifestSchema2, Repositories: []string{"mirror/team/app"}},
			{Digest: h('2'), Size: 1470, Kind: KindConfig, MediaType: types.DockerConfigJSON, Repositories: []string{"mirror/team/app"}},
			{Digest: h('a'), Size: 0, Kind: KindLayer, MediaType: types.DockerLayer, Repositories: []string{"mirror/team/app", "mirror/team/tool"}},
		},
	}
}

func writeInventory(t testing.TB, inv *Inventory) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := inv.Write(&b); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func TestWrite(t *testing.T) {
	got := string(writeInventory(t, sampleInventory()))
	want := `{
  "imoInventoryVersion": 1,
  "registry": "site-registry:5000",
  "prefix": "mirror",
  "taken": "2026-11-23T02:00:00Z",
  "took": "1.234s",
  "repositories": [
    {"name":"mirror/team/app","tags":["v1","v2"]},
    {"name":"mirror/team/tool","tags":[]}
  ],
  "blobs": [
    {"digest":"sha256:1111111111111111111111111111111111111111111111111111111111111111","size":529,"kind":"manifest","mediaType":"application/vnd.docker.distribution.manifest.v2+json","repositories":["mirror/team/app"]},
    {"digest":"sha256:2222222222222222222222222222222222222222222222222222222222222222","size":1470,"kind":"config","mediaType":"application/vnd.docker.container.image.v1+json","repositories":["mirror/team/app"]},
    {"digest":"sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa","size":0,"kind":"layer","mediaType":"application/vnd.docker.image.rootfs.diff.tar.gzip","repositories":["mirror/team/app","mirror/team/tool"]}
  ]
}
`
	if got != want {
		t.Errorf("Write() =\n%s\nwant\n%s", got, want)
	}
	empty := &Inventory{Version: Version, Registry: "r", Taken: time.Unix(0, 0).UTC()}
	b := writeInventory(t, empty)
	if !strings.Contains(string(b), `"repositories": [],`) || !strings.Contains(string(b), `"blobs": []`) || strings.Contains(string(b), "prefix") {
		t.Errorf("Write(empty inventory) =\n%s", b)
	}
	if _, err := Read(bytes.NewReader(b)); err != nil {
		t.Errorf("ReadInventory(Write(empty inventory)) = %v", err)
	}
}

func TestReadRoundTrip(t *testing.T) {
	inv := sampleInventory()
	b := writeInventory(t, inv)
	got, err := Read(bytes.NewReader(b))
	if err != nil {
		t.Fatalf("Read() = %v", err)
	}
	if again := writeInventory(t, got); !bytes.Equal(again, b) {
		t.Errorf("Write(ReadInventory(Write(inv))) differs:\n%s\nwant\n%s", again, b)
	}
	// json.Marshal gives the same schema on one line.
	m, err := json.Marshal(inv)
	if err != nil {
		t.Fatal(err)
	}
	got, err = Read(bytes.NewReader(m))
	if err != nil {
		t.Fatalf("ReadInventory(json.Marshal(inv)) = %v", err)
	}
	if again := writeInventory(t, got); !bytes.Equal(again, b) {
		t.Errorf("Write(ReadInventory(json.Marshal(inv))) differs:\n%s\nwant\n%s", again, b)
	}
	for _, bl := range inv.Blobs {
		if found, ok := got.Blob(bl.Digest); !ok || found.Size != bl.Size {
			t.Errorf("Blob(%s) = %+v, %v", bl.Digest, found, ok)
		}
	}
	if _, ok := got.Blob(v1.Hash{Algorithm: "sha256", Hex: strings.Repeat("0", 64)}); ok {
		t.Error("Blob(an absent digest) found it")
	}
}

var spaces = bytes.Repeat([]byte{' '}, 64<<10)

// endless is a reader of n bytes of spaces.
type endless struct{ n int64 }

func (e *endless) Read(p []byte) (int, error) {
	if e.n <= 0 {
		return 0, io.EOF
	}
	k := copy(p[:min(int64(len(p)), e.n)], spaces)
	e.n -= int64(k)
	return k, nil
}

func TestReadInvalid(t *testing.T) {
	valid := string(writeInventory(t, sampleInventory()))
	edit := func(f func(*Inventory)) io.Reader {
		inv := sampleInventory()
		f(inv)
		b, err := json.Marshal(inv)
		if err != nil {
			t.Fatal(err)
		}
		return bytes.NewReader(b)
	}
	replace := func(old, new string) io.Reader {
		if !strings.Contains(valid, old) {
			t.Fatalf("the sample inventory has no %q", old)
		}
		return strings.NewReader(strings.Replace(valid, old, new, 1))
	}
	tests := []struct {
		name string
		in   io.Reader
		want string
	}{
		{"not JSON", strings.NewReader("digest sha256:1111 529\n"), "invalid character"},
		{"empty", strings.NewReader(""), "EOF"},
		{"an array", strings.NewReader("[]"), "cannot unmarshal"},
		{"trailing data", strings.NewReader(valid + "{}"), "data after"},
		{"no version", replace(`"imoInventoryVersion": 1,`, ""), "not an imo inventory"},
		{"wrong version", edit(func(i *Inventory) { i.Version = 2 }), "version 2"},
		{"no registry", edit(func(i *Inventory) { i.Registry = "" }), "no registry"},
		{"no time", edit(func(i *Inventory) { i.Taken = time.Time{} }), "no time taken"},
		{"negative took", edit(func(i *Inventory) { i.Took = -time.Second }), "negative"},
		{"bad took", replace(`"1.234s"`, `"soon"`), "took"},
		{"unsorted blobs", edit(func(i *Inventory) { i.Blobs[0], i.Blobs[1] = i.Blobs[1], i.Blobs[0] }), "not sorted"},
		{"duplicate blob", edit(func(i *Inventory) { i.Blobs[1].Digest = i.Blobs[0].Digest }), "listed twice"},
		{"bad digest", replace("sha256:2222", "sha256:zz22"), "non-hex"},
		{"short digest", replace("sha256:2222222222222222222222222222222222222222222222222222222222222222", "sha256:22"), "wrong number of hex digits"},
		{"unknown algorithm", replace("sha256:2222", "md5:2222"), "md5"},
		{"no digest", replace(`"digest":"sha256:2222222222222222222222222222222222222222222222222222222222222222",`, ""), "no digest"},
		{"negative size", edit(func(i *Inventory) { i.Blobs[2].Size = -1 }), "negative size"},
		{"size not a number", replace(`"size":529`, `"size":"529"`), "cannot unmarshal"},
		{"unknown kind", edit(func(i *Inventory) { i.Blobs[1].Kind = "blob" }), `kind "blob"`},
		{"unsorted repositories", edit(func(i *Inventory) {
			i.Repositories[0], i.Repositories[1] = i.Repositories[1], i.Repositories[0]
		}), "not sorted"},
		{"unnamed repository", edit(func(i *Inventory) { i.Repositories[0].Name = "" }), "not a repository path"},
		{"unsorted tags", edit(func(i *Inventory) { i.Repositories[0].Tags = []string{"v2", "v1"} }), "tags are not sorted"},
		{"blob in an unknown repository", edit(func(i *Inventory) { i.Blobs[0].Repositories = []string{"elsewhere"} }), "not in the inventory"},
		{"blob repositories unsorted", edit(func(i *Inventory) { slices.Reverse(i.Blobs[2].Repositories) }), "not sorted"},
		{"huge", io.MultiReader(strings.NewReader(`{"imoInventoryVersion": 1,`), &endless{MaxSize}), "more than"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			inv, err := Read(tc.in)
			if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Read() = %v, %v; want an error wrapping ErrInvalidInventory with %q", inv, err, tc.want)
			}
		})
	}
}

func FuzzRead(f *testing.F) {
	f.Add(writeInventory(f, sampleInventory()))
	f.Add(writeInventory(f, &Inventory{Version: 1, Registry: "r", Taken: time.Unix(1, 0).UTC()}))
	f.Add([]byte(`{"imoInventoryVersion":1,"registry":"r","taken":"2026-01-01T00:00:00Z","took":"0s","repositories":null,"blobs":[{"digest":"sha256:` + strings.Repeat("0", 64) + `","size":1,"kind":"layer"}]}`))
	f.Add([]byte("{}"))
	f.Fuzz(func(t *testing.T, b []byte) {
		inv, err := Read(bytes.NewReader(b))
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("Read() = %v, which does not wrap ErrInvalidInventory", err)
			}
			return
		}
		once := writeInventory(t, inv)
		again, err := Read(bytes.NewReader(once))
		if err != nil {
			t.Fatalf("ReadInventory(Write(ReadInventory(b))) = %v\n%s", err, once)
		}
		if twice := writeInventory(t, again); !bytes.Equal(once, twice) {
			t.Fatalf("Write is not stable through ReadInventory:\n%s\n%s", once, twice)
		}
	})
}

// TestReadRepositoryNames refuses repository names imo cannot push to.
func TestReadRepositoryNames(t *testing.T) {
	inv := sampleInventory()
	inv.Repositories = inv.Repositories[:1]
	inv.Repositories[0].Name = "Team/App"
	for k := range inv.Blobs {
		inv.Blobs[k].Repositories = []string{"Team/App"}
	}
	var b bytes.Buffer
	if err := inv.Write(&b); err != nil {
		t.Fatal(err)
	}
	if _, err := Read(&b); !errors.Is(err, ErrInvalid) {
		t.Errorf("ReadInventory(repository %q) = %v, want ErrInvalidInventory", "Team/App", err)
	}
}
