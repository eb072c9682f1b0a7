package main

import (
	"archive/tar"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/imokit/imo/archive"
)

// TestVolumes splits a pull into volumes with parity, then verifies,
// inspects and pushes them with volumes lost and damaged.
func TestVolumes(t *testing.T) {
	t.Parallel()
	src, site, pair := registries(t, nil, nil)
	v2, err := pair.V2.Digest()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	r := imoCmd(t, "", "pull", "--plain-http", "-q", "--volume-size", "64KiB", "--parity", "2", "scratch", src.Ref("app:v2"), "-o", filepath.Join(dir, "app.tar"))
	if r.code != 0 {
		t.Fatal(r)
	}
	vols := strings.Fields(r.stdout)
	if len(vols) < 5 || !strings.HasSuffix(vols[0], "app.vol1-of-"+strconv.Itoa(len(vols)-2)+".tar") || !strings.HasSuffix(vols[len(vols)-1], "app.par2-of-2.tar") {
		t.Fatalf("imo pull --volume-size printed %v, want every volume's path, data then parity", vols)
	}
	for _, v := range vols {
		if fi, err := os.Stat(v); err != nil || fi.Size() > 64<<10 {
			t.Fatalf("volume %s: %v, %d bytes; want at most 64 KiB", v, err, fi.Size())
		}
		if !strings.Contains(tarEntries(t, v), "imo.json\n") {
			t.Errorf("volume %s does not carry the plan", v)
		}
	}
	if r := imoCmd(t, "", "verify", dir); r.code != 0 || !strings.Contains(r.stdout, "all present and intact") || !strings.Contains(r.stdout, "ok ") {
		t.Errorf("imo verify of an intact set:\n%s", r)
	}
	if r := imoCmd(t, "", "inspect", vols[2]); r.code != 0 || !strings.Contains(r.stdout, v2.String()) {
		t.Errorf("imo inspect of one volume (its set beside it):\n%s", r)
	}

	// Two volumes lost: parity 2 covers them.
	lost := filepath.Join(t.TempDir(), "lost")
	os.Mkdir(lost, 0o755)
	for _, v := range vols[1:2] {
		copyFile(t, v, filepath.Join(lost, filepath.Base(v)))
	}
	for _, v := range vols[3:] {
		copyFile(t, v, filepath.Join(lost, filepath.Base(v)))
	}
	r = imoCmd(t, "", "verify", lost)
	if r.code != 0 || strings.Count(r.stdout, "missing  ") != 2 {
		t.Errorf("imo verify with two volumes missing and parity 2: want exit 0 and both named:\n%s", r)
	}
	r = imoCmd(t, "", "push", "--plain-http", "-q", lost, site.Ref("copy:v2"))
	if r.code != 0 || strings.TrimSpace(r.stdout) != site.Ref("copy:v2")+"@"+v2.String() || strings.Count(r.stderr, "rebuilt from parity") != 2 {
		t.Errorf("imo push of a set missing two volumes with parity 2:\n%s", r)
	}

	// A third lost: nothing is sent, exit 3, each volume named.
	os.Remove(filepath.Join(lost, filepath.Base(vols[len(vols)-1])))
	site.ResetCounts()
	r = imoCmd(t, "", "push", "--plain-http", "-q", lost, site.Ref("other:v2"))
	if r.code != exitMissing || !strings.Contains(r.stderr, "data volume 1 of") || !strings.Contains(r.stderr, "parity volume 2 of 2 missing") || requests(site) != 0 {
		t.Errorf("imo push of a set missing three volumes with parity 2: want exit %d, each named, no request:\n%s", exitMissing, r)
	}
	if r := imoCmd(t, "", "verify", lost); r.code != exitMissing {
		t.Errorf("imo verify of a set missing three volumes with parity 2: want exit %d:\n%s", exitMissing, r)
	}

	// A damaged data volume: verify says so (exit 1) though parity repairs
	// it; push repairs it.
	damaged := filepath.Join(t.TempDir(), "damaged")
	os.Mkdir(damaged, 0o755)
	for _, v := range vols {
		copyFile(t, v, filepath.Join(damaged, filepath.Base(v)))
	}
	flip(t, filepath.Join(damaged, filepath.Base(vols[1])))
	if r := imoCmd(t, "", "verify", damaged); r.code != exitError || !strings.Contains(r.stdout, "damaged  data volume 2 of") {
		t.Errorf("imo verify of a set with a damaged volume: want exit %d naming it:\n%s", exitError, r)
	}
	if r := imoCmd(t, "", "push", "--plain-http", "-q", damaged, site.Ref("repaired:v2")); r.code != 0 || !strings.Contains(r.stderr, "damaged in piece") {
		t.Errorf("imo push of a set with a damaged volume:\n%s", r)
	}
}

// TestVolumesSignedBundle splits a signed bundle into volumes: every
// volume carries the signature, and the set verifies and pushes to a target.
func TestVolumesSignedBundle(t *testing.T) {
	t.Parallel()
	src, site, _ := registries(t, nil, nil)
	dir := t.TempDir()
	key, pub := filepath.Join(dir, "key.pem"), filepath.Join(dir, "pub.pem")
	openssl(t, "genpkey", "-algorithm", "ed25519", "-out", key)
	openssl(t, "pkey", "-in", key, "-pubout", "-out", pub)
	from := filepath.Join(dir, "pairs.txt")
	os.WriteFile(from, []byte(src.Ref("app:v1")+" "+src.Ref("app:v2")+"\n"), 0o644)
	out := filepath.Join(dir, "vols", "bundle.tar")
	os.Mkdir(filepath.Dir(out), 0o755)
	r := imoCmd(t, "", "pull", "--plain-http", "-q", "--from", from, "--sign-key", key, "--volume-size", "64KiB", "--parity", "1", "-o", out)
	if r.code != 0 {
		t.Fatal(r)
	}
	vols := strings.Fields(r.stdout)
	for _, v := range vols {
		if !strings.Contains(tarEntries(t, v), archive.SignatureFile) {
			t.Errorf("volume %s does not carry the signature", v)
		}
	}
	if r := imoCmd(t, "", "verify", "--verify-key", pub, filepath.Dir(out)); r.code != 0 || !strings.Contains(r.stdout, "signed by the key") {
		t.Errorf("imo verify --verify-key of a signed set:\n%s", r)
	}
	if r := imoCmd(t, "", "push", "--plain-http", "-q", "--verify-key", pub, vols[0], site.Host); r.code != 0 || !strings.Contains(r.stdout, site.Ref("app:v2@sha256:")) {
		t.Errorf("imo push --verify-key of a signed bundle's volumes to a target:\n%s", r)
	}
}

// TestVolumeUsage checks the command line of volumes.
func TestVolumeUsage(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{
		{"pull", "--parity", "1", "scratch", "example.com/app:v2"},
		{"pull", "--volume-size", "dvd", "-o", "-", "scratch", "example.com/app:v2"},
		{"pull", "--volume-size", "1k", "scratch", "example.com/app:v2"},
		{"pull", "--volume-size", "floppy", "scratch", "example.com/app:v2"},
		{"pull", "--volume-size", "dvd", "--parity", "-1", "scratch", "example.com/app:v2"},
		{"push", "-", "difference.vol1-of-2.tar", "example.com/app:v2"},
	} {
		if r := imoCmd(t, "", args...); r.code != exitUsage {
			t.Errorf("imo %s: want exit %d:\n%s", strings.Join(args, " "), exitUsage, r)
		}
	}
	notVolume := filepath.Join(t.TempDir(), "notes.txt")
	os.WriteFile(notVolume, []byte("hello"), 0o644)
	if r := imoCmd(t, "", "verify", notVolume, notVolume); r.code != exitError || !strings.Contains(r.stderr, "is not a volume") {
		t.Errorf("imo verify of files that are not volumes:\n%s", r)
	}
	if !strings.Contains(imoCmd(t, "", "pull", "--help").stdout, "4,696,178,688") {
		t.Error("imo pull --help does not give the sizes of the media")
	}
}

// tarEntries lists the names in the tar at path, one per line.
func tarEntries(t *testing.T, path string) string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var names strings.Builder
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return names.String()
		}
		if err != nil {
			t.Fatalf("reading %s: %v", path, err)
		}
		names.WriteString(h.Name + "\n")
	}
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// flip inverts the middle byte of the file at path.
func flip(t *testing.T, path string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)/2] ^= 0xff
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}
