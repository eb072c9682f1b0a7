package main

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/imokit/imo/archive"
	"github.com/imokit/imo/internal/sandbox"
)

// openssl runs openssl, skipping the test where it is not installed.
func openssl(t *testing.T, args ...string) string {
	t.Helper()
	if _, err := exec.LookPath("openssl"); err != nil {
		if os.Getenv("IMO_INTEGRATION") != "" {
			t.Fatal("openssl not installed: apt-get install openssl")
		}
		t.Skip("openssl not installed: apt-get install openssl (set IMO_INTEGRATION=1 to make this a failure)")
	}
	out, err := exec.Command("openssl", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("openssl %v: %v\n%s", args, err, out)
	}
	return string(out)
}

// tarEntry returns the content of the named entry of the tar at path.
func tarEntry(t *testing.T, path, name string) []byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if err != nil {
			t.Fatalf("no %s in %s: %v", name, path, err)
		}
		if h.Name == name {
			b, err := io.ReadAll(tr)
			if err != nil {
				t.Fatal(err)
			}
			return b
		}
	}
}

// TestSignAndVerify signs an archive with a passphrase-protected key that
// openssl made, checks the signature with openssl as the README says, and
// runs inspect, vet and push with the right key, the wrong one and none.
func TestSignAndVerify(t *testing.T) {
	src, site, _ := registries(t, nil, nil)
	dir := t.TempDir()
	key, pub, other := filepath.Join(dir, "key.pem"), filepath.Join(dir, "pub.pem"), filepath.Join(dir, "other.pem")
	openssl(t, "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-aes256", "-pass", "pass:s3cret-phrase", "-out", key)
	openssl(t, "pkey", "-in", key, "-passin", "pass:s3cret-phrase", "-pubout", "-out", pub)
	openssl(t, "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", filepath.Join(dir, "other-key.pem"))
	openssl(t, "pkey", "-in", filepath.Join(dir, "other-key.pem"), "-pubout", "-out", other)

	arc := filepath.Join(dir, "signed.tar")
	r := imoCmd(t, "", "pull", "--plain-http", "-q", "--sign-key", key, src.Ref("app:v1"), src.Ref("app:v2"), "-o", arc)
	if r.code != exitUsage || !strings.Contains(r.stderr, "encrypted") {
		t.Errorf("imo pull --sign-key with an encrypted key and no passphrase: want a usage error:\n%s", r)
	}
	if r := imoCmd(t, "s3cret-phrase\n", "pull", "--plain-http", "-q", "--sign-key", key, "--passphrase-stdin", src.Ref("app:v1"), src.Ref("app:v2"), "-o", arc); r.code != 0 || strings.Contains(r.stdout+r.stderr, "s3cret-phrase") {
		t.Fatalf("imo pull --sign-key:\n%s", r)
	}
	// The passphrase from the environment is taken out of it, so that no
	// credential helper the pull runs inherits it.
	t.Setenv(signPassphraseEnv, "s3cret-phrase")
	if r := imoCmd(t, "", "pull", "--plain-http", "-q", "--sign-key", key, src.Ref("app:v1"), src.Ref("app:v2"), "-o", filepath.Join(dir, "env.tar")); r.code != 0 {
		t.Errorf("imo pull --sign-key with %s set:\n%s", signPassphraseEnv, r)
	}
	if v, set := os.LookupEnv(signPassphraseEnv); set {
		t.Errorf("%s is still set (%q) after the pull read it", signPassphraseEnv, v)
	}

	// openssl accepts the signature, as the README shows.
	plan, sig := filepath.Join(dir, "imo.json"), filepath.Join(dir, "imo.json.sig.der")
	der, err := base64.StdEncoding.DecodeString(string(tarEntry(t, arc, archive.SignatureFile)))
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(plan, tarEntry(t, arc, archive.PlanFile), 0o644)
	os.WriteFile(sig, der, 0o644)
	if out := openssl(t, "dgst", "-sha256", "-verify", pub, "-signature", sig, plan); !strings.Contains(out, "Verified OK") {
		t.Errorf("openssl dgst -verify: %s", out)
	}

	r = imoCmd(t, "", "inspect", arc)
	if r.code != 0 || !strings.Contains(r.stdout, "signed by the key ") || !strings.Contains(r.stdout, "not checked") {
		t.Errorf("imo inspect of a signed archive: want who signed it:\n%s", r)
	}
	if r := imoCmd(t, "", "inspect", "--verify-key", pub, arc); r.code != 0 || !strings.Contains(r.stdout, "verified") {
		t.Errorf("imo inspect --verify-key with the signer's key:\n%s", r)
	}
	if r := imoCmd(t, "", "inspect", "--json", arc); !strings.Contains(r.stdout, `"signer": "`) {
		t.Errorf("imo inspect --json: want the signer:\n%s", r)
	}
	for _, cmd := range [][]string{
		{"inspect", "--verify-key", other, arc},
		{"vet", "--plain-http", "--verify-key", other, arc, site.Ref("app:v2")},
		{"push", "--plain-http", "--verify-key", other, arc, site.Ref("app:v2")},
	} {
		site.ResetCounts()
		r := imoCmd(t, "", cmd...)
		if r.code != exitRefused || !strings.Contains(r.stderr, "no key given verifies") {
			t.Errorf("imo %s with another key: want exit %d:\n%s", cmd[0], exitRefused, r)
		}
		if n := requests(site); n != 0 {
			t.Errorf("imo %s with another key sent %d requests", cmd[0], n)
		}
	}
	r = imoCmd(t, "", "push", "--plain-http", "-q", arc, site.Ref("app:v2"))
	if r.code != 0 || !strings.Contains(r.stderr, "signed by the key") {
		t.Errorf("imo push of a signed archive without a key: want it pushed, saying who signed it:\n%s", r)
	}
}

// TestVerifyKeyEnvironment makes verification a site's policy: with
// IMO_VERIFY_KEY set, an unsigned archive is refused without a flag.
func TestVerifyKeyEnvironment(t *testing.T) {
	src, site, _ := registries(t, nil, nil)
	dir := t.TempDir()
	openssl(t, "genpkey", "-algorithm", "ed25519", "-out", filepath.Join(dir, "key.pem"))
	openssl(t, "pkey", "-in", filepath.Join(dir, "key.pem"), "-pubout", "-out", filepath.Join(dir, "pub.pem"))
	arc := filepath.Join(dir, "unsigned.tar")
	if r := imoCmd(t, "", "pull", "--plain-http", "-q", src.Ref("app:v1"), src.Ref("app:v2"), "-o", arc); r.code != 0 {
		t.Fatal(r)
	}
	t.Setenv(verifyKeyEnv, filepath.Join(dir, "pub.pem"))
	site.ResetCounts()
	r := imoCmd(t, "", "push", "--plain-http", "-q", arc, site.Ref("app:v2"))
	if r.code != exitRefused || !strings.Contains(r.stderr, "not signed") || requests(site) != 0 {
		t.Errorf("imo push of an unsigned archive with %s set: want exit %d and no request:\n%s", verifyKeyEnv, exitRefused, r)
	}
	signed := filepath.Join(dir, "signed.tar")
	if r := imoCmd(t, "", "pull", "--plain-http", "-q", "--sign-key", filepath.Join(dir, "key.pem"), src.Ref("app:v1"), src.Ref("app:v2"), "-o", signed); r.code != 0 {
		t.Fatal(r)
	}
	// An archive that does not even read is refused too, when a key is set.
	b, err := os.ReadFile(signed)
	if err != nil {
		t.Fatal(err)
	}
	cut := filepath.Join(dir, "cut.tar")
	os.WriteFile(cut, b[:len(b)/2], 0o644)
	for _, cmd := range [][]string{{"inspect", "--verify-key", filepath.Join(dir, "pub.pem"), cut}, {"vet", "--plain-http", cut, site.Ref("app:v2")}, {"push", "--plain-http", cut, site.Ref("app:v2")}} {
		if r := imoCmd(t, "", cmd...); r.code != exitRefused {
			t.Errorf("imo %s of a truncated archive with a key set: want exit %d:\n%s", cmd[0], exitRefused, r)
		}
	}
	report := filepath.Join(dir, "report.json")
	if r := imoCmd(t, "", "push", "--plain-http", "-q", "--report", report, signed, site.Ref("app:v2")); r.code != 0 {
		t.Errorf("imo push of an Ed25519-signed archive with %s set:\n%s", verifyKeyEnv, r)
	}
	openssl(t, "pkey", "-pubin", "-in", filepath.Join(dir, "pub.pem"), "-outform", "DER", "-out", filepath.Join(dir, "pub.der"))
	der, err := os.ReadFile(filepath.Join(dir, "pub.der"))
	if err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf("verified: signed by %x", sha256.Sum256(der))
	if rep := readReport(t, report); rep.Archive.Verification != want {
		t.Errorf("the report of a verified push says %q, want %q", rep.Archive.Verification, want)
	}
	// A push that stops at its key file still leaves its report.
	t.Setenv(verifyKeyEnv, filepath.Join(dir, "no-such-key.pem"))
	os.Remove(report)
	if r := imoCmd(t, "", "push", "--plain-http", "-q", "--report", report, signed, site.Ref("app:v2")); r.code != exitUsage {
		t.Errorf("imo push with a missing key file: want exit %d:\n%s", exitUsage, r)
	}
	if rep := readReport(t, report); rep.Result != "failed" || !strings.Contains(rep.Error, "no-such-key.pem") {
		t.Errorf("the report of a push stopped by a missing key file = %+v", rep)
	}
}

// readReport reads the push report at path.
func readReport(t *testing.T, path string) pushReport {
	t.Helper()
	var rep pushReport
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &rep); err != nil {
		t.Fatalf("the report does not parse: %v\n%s", err, b)
	}
	return rep
}

// TestPushReport checks push --report for a push that succeeds and one
// that fails half-way (one image of a bundle lacks its base at an empty
// registry).
func TestPushReport(t *testing.T) {
	t.Parallel()
	src, site, _ := registries(t, nil, nil)
	// other:v1 and other:v2 share a layer no app image has, so a bundle of
	// app:v2 whole and other:v1 → other:v2 cannot land on an empty site.
	otherBase, err := sandbox.Layer(types.DockerLayer, "etc/other.txt", sandbox.Text("other", 8<<10))
	if err != nil {
		t.Fatal(err)
	}
	otherTop, err := sandbox.Layer(types.DockerLayer, "app/other.txt", sandbox.Text("other v2", 8<<10))
	if err != nil {
		t.Fatal(err)
	}
	plat := v1.Platform{OS: "linux", Architecture: "amd64"}
	for tag, layers := range map[string][]v1.Layer{"v1": {otherBase}, "v2": {otherBase, otherTop}} {
		img, err := sandbox.Docker.Image(plat, layers...)
		if err != nil {
			t.Fatal(err)
		}
		if err := src.Write(context.Background(), src.Ref("other:"+tag), img); err != nil {
			t.Fatal(err)
		}
		if tag == "v1" {
			if err := site.Write(context.Background(), site.Ref("other:v1"), img); err != nil {
				t.Fatal(err)
			}
		}
	}
	dir := t.TempDir()
	from := filepath.Join(dir, "pairs.txt")
	os.WriteFile(from, []byte("scratch "+src.Ref("app:v2")+"\n"+src.Ref("other:v1")+" "+src.Ref("other:v2")+"\n"), 0o644)
	bundle := filepath.Join(dir, "bundle.tar")
	if r := imoCmd(t, "", "pull", "--plain-http", "-q", "--from", from, "-o", bundle); r.code != 0 {
		t.Fatal(r)
	}
	failed := filepath.Join(dir, "failed.json")
	r := imoCmd(t, "", "push", "--plain-http", "-q", "--report", failed, bundle, sandbox.NewRegistry(nil, nil).Host)
	rep := readReport(t, failed)
	if r.code != exitMissing || rep.Result != "failed" || len(rep.Images) != 2 || rep.Images[0].Result != "pushed" || rep.Images[1].Result != "failed" || rep.Archive.Verification != "unsigned" {
		t.Errorf("the report of a push that failed half-way = %+v\n%s", rep, r)
	}
	ok := filepath.Join(dir, "ok.json")
	r = imoCmd(t, "", "push", "--plain-http", "-q", "--report", ok, bundle, site.Host)
	rep = readReport(t, ok)
	actions := map[string]int{}
	for _, b := range rep.Blobs {
		actions[b.Action]++
	}
	if r.code != 0 || rep.Result != "pushed" || rep.Archive.PlanDigest.Hex == "" || actions["present"] == 0 || actions["uploaded"] == 0 {
		t.Errorf("the report of a push = %+v (actions %v)\n%s", rep, actions, r)
	}
	if !bytes.Contains([]byte(r.stdout), []byte("@sha256:")) {
		t.Errorf("imo push --report printed no pushed reference:\n%s", r)
	}
}
