package main

import (
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/imokit/imo/internal/sandbox"
)

type options struct {
	profile         string
	runs            int
	dir             string
	out             string
	skipConcurrency bool
	skipBundle      bool
	onlyPulls       bool
	skipSublayer    bool
	onlySublayer    bool
}

// profile sizes: the real files an image pair is built from, those each
// of the six layers of the concurrency scenario is built from, those of
// the rebuilt layer of the sub-layer scenario, and those of the one big
// layer of the ranged scenario. Files of this machine compress to about
// 30% with gzip, so the images come to about 30 MiB, 300 MiB and 2 GiB,
// the six layers to about 50 MiB each (5 MiB in the quick profile), and
// the big layer to about 100 MiB (40 MiB).
var profiles = map[string]struct{ pair, six, rebuild, big int64 }{
	"quick":   {100 << 20, 16 << 20, 40 << 20, 140 << 20},
	"default": {1 << 30, 170 << 20, 160 << 20, 340 << 20},
	"large":   {7 << 30, 170 << 20, 160 << 20, 340 << 20},
}

// tool is one way of doing a scenario's job.
type tool struct {
	name string
	// prepare, when set, readies the destination of run r (untimed).
	prepare func(r int) error
	// cmd returns the command for run r, writing into dir.
	cmd func(r int, dir string) (*exec.Cmd, error)
}

type scenario struct {
	name     string
	baseline string // the tool the others are compared with
	archive  int64  // the archive's size, for the written/archive ratio
	tools    []tool
}

type bench struct {
	o     options
	work  string
	imo   string
	self  string
	reg   *sandbox.Distribution
	lines []string
	// link is a proxy to reg that behaves like a network link.
	link *httptest.Server
}

func (b *bench) printf(format string, args ...any) {
	line := fmt.Sprintf(format, args...)
	fmt.Println(line)
	b.lines = append(b.lines, line)
}

func run(ctx context.Context, o options) error {
	size, ok := profiles[o.profile]
	if !ok {
		return fmt.Errorf("unknown profile %q: want quick, default or large", o.profile)
	}
	b := &bench{o: o, work: o.dir}
	if b.work == "" {
		dir, err := os.MkdirTemp("", "imo-bench-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		b.work = dir
	}
	var err error
	if b.self, err = os.Executable(); err != nil {
		return err
	}
	b.imo = filepath.Join(b.work, "imo")
	if out, err := exec.Command("go", "build", "-o", b.imo, "./cmd/imo").CombinedOutput(); err != nil {
		return fmt.Errorf("building imo (run the benchmark from the repository root): %v\n%s", err, out)
	}
	if b.reg, err = sandbox.StartDistribution(ctx, filepath.Join(b.work, "registry"), sandbox.DistributionOptions{}); err != nil {
		return err
	}
	defer b.reg.Stop()
	b.link = slowProxy("http://"+b.reg.Host, linkLatency, linkBandwidth)
	defer b.link.Close()
	if o.onlySublayer {
		b.header(size.rebuild)
		if err := b.rebuild(size.rebuild); err != nil {
			return err
		}
		return b.write()
	}

	fmt.Fprintf(os.Stderr, "building images from about %s MiB of real files (this takes a while: gzip level 6)...\n", mib(size.pair))
	files, err := collectFiles(size.pair)
	if err != nil {
		return err
	}
	layerDir := filepath.Join(b.work, "layers")
	if err := os.MkdirAll(layerDir, 0o755); err != nil {
		return err
	}
	// os 40%, runtime 30%, app v1 15%, app v2 15%: v2 shares os and runtime.
	layers, err := buildLayers(layerDir, split(files, 0.4, 0.3, 0.15, 0.15), types.DockerLayer)
	if err != nil {
		return err
	}
	amd64 := v1.Platform{OS: "linux", Architecture: "amd64"}
	v1img, err := sandbox.Docker.Image(amd64, layers[0], layers[1], layers[2])
	if err != nil {
		return err
	}
	v2img, err := sandbox.Docker.Image(amd64, layers[0], layers[1], layers[3])
	if err != nil {
		return err
	}
	for tag, img := range map[string]v1.Image{"app:v1": v1img, "app:v2": v2img} {
		if err := remote.Write(ref(b.reg.Host+"/"+tag), img); err != nil {
			return err
		}
	}
	if err := b.pushIndex(layers); err != nil {
		return err
	}

	fmt.Fprintln(os.Stderr, "measuring...")
	b.header(size.pair)
	b.printf("")
	b.printf("| scenario | tool | time (s) | × baseline | CPU (s) | CPU × baseline | peak RSS (MiB) | written (MiB) | written ÷ archive |")
	b.printf("|---|---|---|---|---|---|---|---|---|")
	scenarios, err := b.scenarios()
	if err != nil {
		return err
	}
	for _, s := range scenarios {
		if err := b.measure(s); err != nil {
			return err
		}
	}
	if o.onlyPulls {
		return b.write()
	}
	if !o.skipSublayer {
		if err := b.rebuild(size.rebuild); err != nil {
			return err
		}
	}
	if !o.skipBundle {
		if err := b.bundle(layers[:2]); err != nil {
			return err
		}
	}
	if !o.skipConcurrency {
		if err := b.concurrency(ctx, size.six); err != nil {
			return err
		}
		if err := b.bigLayer(ctx, size.big); err != nil {
			return err
		}
	}
	return b.write()
}

// write writes the report to the -o file, if any.
func (b *bench) write() error {
	if b.o.out == "" {
		return nil
	}
	return os.WriteFile(b.o.out, []byte(strings.Join(b.lines, "\n")+"\n"), 0o644)
}

// pushIndex pushes idx:v1 and idx:v2, OCI indexes of two platforms over the
// same layers as app:v1 and app:v2.
func (b *bench) pushIndex(docker []v1.Layer) error {
	for tag, ls := range map[string][]v1.Layer{"v1": {docker[0], docker[1], docker[2]}, "v2": {docker[0], docker[1], docker[3]}} {
		imgs := map[string]v1.Image{}
		for _, p := range []string{"linux/amd64", "linux/arm64"} {
			pl, _ := v1.ParsePlatform(p)
			img, err := sandbox.OCI.Image(*pl, ociLayers(ls)...)
			if err != nil {
				return err
			}
			imgs[p] = img
		}
		idx, err := sandbox.OCI.ImageIndex(imgs)
		if err != nil {
			return err
		}
		if err := remote.WriteIndex(ref(b.reg.Host+"/idx:"+tag), idx); err != nil {
			return err
		}
	}
	return nil
}

// ociLayers gives the same compressed bytes under the OCI media type.
func ociLayers(ls []v1.Layer) []v1.Layer {
	out := make([]v1.Layer, len(ls))
	for i, l := range ls {
		out[i] = mediaTyped{l, types.OCILayer}
	}
	return out
}

type mediaTyped struct {
	v1.Layer
	mt types.MediaType
}

func (m mediaTyped) MediaType() (types.MediaType, error) { return m.mt, nil }

func (b *bench) header(budget int64) {
	goVersion, _ := exec.Command("go", "version").Output()
	skopeoVersion, _ := exec.Command("skopeo", "--version").Output()
	regVersion, _ := exec.Command(sandbox.DistributionBinary, "--version").Output()
	b.printf("Profile %q (images built from %s MiB of real files), %d runs per tool, medians.", b.o.profile, mib(budget), b.o.runs)
	b.printf("Machine: %s/%s, %d cores; %s; %s; %s.", runtime.GOOS, runtime.GOARCH, runtime.NumCPU(),
		strings.TrimSpace(string(goVersion)), strings.TrimSpace(string(regVersion)), strings.TrimSpace(string(skopeoVersion)))
}

// blobsOf lists the blobs an archive plan carries (configs and layers).
func (b *bench) blobsOf(base, final string) ([]string, error) {
	out, err := exec.Command(b.imo, "pull", "--plain-http", "-q", "--dry-run", base, b.reg.Host+"/"+final).Output()
	if err != nil {
		return nil, fmt.Errorf("imo pull --dry-run: %w", err)
	}
	var ds []string
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) >= 4 && strings.HasPrefix(f[0], "sha256:") && f[3] == "yes" {
			ds = append(ds, f[0])
		}
	}
	return ds, nil
}

func (b *bench) scenarios() ([]scenario, error) {
	host := b.reg.Host
	pullTools := func(base, final string, blobs []string, skopeo bool) []tool {
		ts := []tool{
			{name: "raw floor (plain GETs, 4 at once)", cmd: func(_ int, dir string) (*exec.Cmd, error) {
				return exec.Command(b.self, append([]string{"-role", "floor", "http://" + host, strings.Split(final, ":")[0], dir, "4"}, blobs...)...), nil
			}},
			{name: "raw floor + SHA-256 check", cmd: func(_ int, dir string) (*exec.Cmd, error) {
				return exec.Command(b.self, append([]string{"-role", "floor-verify", "http://" + host, strings.Split(final, ":")[0], dir, "4"}, blobs...)...), nil
			}},
			{name: "curl (4 at once) into files", cmd: func(_ int, dir string) (*exec.Cmd, error) {
				args := []string{"-s", "--fail", "--parallel", "--parallel-max", "4"}
				for k, d := range blobs {
					args = append(args, "http://"+host+"/v2/"+strings.Split(final, ":")[0]+"/blobs/"+d, "-o", filepath.Join(dir, fmt.Sprint(k)))
				}
				return exec.Command("curl", args...), nil
			}},
			{name: "imo pull -o FILE", cmd: func(_ int, dir string) (*exec.Cmd, error) {
				return exec.Command(b.imo, "pull", "--plain-http", "-q", base, host+"/"+final, "-o", filepath.Join(dir, "a.tar")), nil
			}},
			{name: "imo pull -o - > FILE", cmd: func(_ int, dir string) (*exec.Cmd, error) {
				f, err := os.Create(filepath.Join(dir, "a.tar"))
				if err != nil {
					return nil, err
				}
				c := exec.Command(b.imo, "pull", "--plain-http", "-q", base, host+"/"+final, "-o", "-")
				c.Stdout = f
				return c, nil
			}},
		}
		if skopeo {
			ts = append(ts, tool{name: "go-containerregistry pull → layout (crane pull)", cmd: func(_ int, dir string) (*exec.Cmd, error) {
				return exec.Command(b.self, "-role", "ggcr-pull", host+"/"+final, filepath.Join(dir, "layout")), nil
			}})
			ts = append(ts, tool{name: "skopeo copy → oci-archive", cmd: func(_ int, dir string) (*exec.Cmd, error) {
				c := exec.Command("skopeo", "copy", "-q", "--src-tls-verify=false", "docker://"+host+"/"+final, "oci-archive:"+filepath.Join(dir, "a.tar"))
				c.Env = append(os.Environ(), "TMPDIR="+dir)
				return c, nil
			}})
		}
		return ts
	}
	var out []scenario
	for _, p := range []struct {
		name, base, final string
		skopeo            bool
	}{
		{"pull delta, Docker", host + "/app:v1", "app:v2", false},
		{"pull whole, Docker", "scratch", "app:v2", true},
		{"pull delta, OCI index (2 platforms)", host + "/idx:v1", "idx:v2", false},
	} {
		blobs, err := b.blobsOf(p.base, p.final)
		if err != nil {
			return nil, err
		}
		out = append(out, scenario{name: p.name, baseline: "raw floor (plain GETs, 4 at once)", tools: pullTools(p.base, p.final, blobs, p.skopeo)})
	}
	if b.o.onlyPulls {
		return out, nil
	}

	// Push: imo's archives against what crane push does from a layout.
	archives := filepath.Join(b.work, "archives")
	if err := os.MkdirAll(archives, 0o755); err != nil {
		return nil, err
	}
	delta, whole := filepath.Join(archives, "delta.tar"), filepath.Join(archives, "whole.tar")
	for _, a := range [][]string{{host + "/app:v1", delta}, {"scratch", whole}} {
		if out, err := exec.Command(b.imo, "pull", "--plain-http", "-q", a[0], host+"/app:v2", "-o", a[1]).CombinedOutput(); err != nil {
			return nil, fmt.Errorf("imo pull: %v\n%s", err, out)
		}
	}
	out[0].archive, out[1].archive = fileSize(delta), fileSize(whole)

	// Volumes: the whole image in volumes of about a sixth of it (50 MiB
	// for the default profile), with two parity volumes; pulled against
	// the plain pull, and pushed with one data volume missing.
	volSize := int64(50 << 20)
	if fileSize(whole) < 200<<20 {
		volSize = max(fileSize(whole)/6, 1<<20)
	}
	volSizeArg := fmt.Sprint(volSize)
	out[1].tools = append(out[1].tools, tool{name: fmt.Sprintf("imo pull --volume-size %s MiB --parity 2", mib(volSize)), cmd: func(_ int, dir string) (*exec.Cmd, error) {
		return exec.Command(b.imo, "pull", "--plain-http", "-q", "--volume-size", volSizeArg, "--parity", "2", "scratch", host+"/app:v2", "-o", filepath.Join(dir, "a.tar")), nil
	}})
	volumes := filepath.Join(archives, "volumes")
	if err := os.MkdirAll(volumes, 0o755); err != nil {
		return nil, err
	}
	made, err := exec.Command(b.imo, "pull", "--plain-http", "-q", "--volume-size", volSizeArg, "--parity", "2", "scratch", host+"/app:v2", "-o", filepath.Join(volumes, "app.tar")).CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("imo pull --volume-size: %v\n%s", err, made)
	}
	if vols := strings.Fields(string(made)); len(vols) > 3 {
		os.Remove(vols[1]) // one data volume lost: parity rebuilds it
	}
	// The same image read from an OCI layout on this disk rather than from
	// the registry: what a CI build that ends in a layout costs to pull.
	site := filepath.Join(archives, "site")
	if made, err := exec.Command(b.imo, "push", "-q", whole, "oci:"+site+":v2").CombinedOutput(); err != nil {
		return nil, fmt.Errorf("imo push into a layout: %v\n%s", err, made)
	}
	out[1].tools = append(out[1].tools, tool{name: "imo pull from an OCI layout (oci:DIR) -o FILE", cmd: func(_ int, dir string) (*exec.Cmd, error) {
		return exec.Command(b.imo, "pull", "-q", "scratch", "oci:"+site+":v2", "-o", filepath.Join(dir, "a.tar")), nil
	}})
	// The same through a network link rather than from a registry on this
	// machine: what volumes cost when the network, not the CPU, is the limit.
	link := strings.TrimPrefix(b.link.URL, "http://")
	out = append(out, scenario{name: fmt.Sprintf("pull whole over a link (%s MiB/s a connection, %s a request)", mib(linkBandwidth), linkLatency), baseline: "imo pull -o FILE", archive: fileSize(whole), tools: []tool{
		{name: "imo pull -o FILE", cmd: func(_ int, dir string) (*exec.Cmd, error) {
			return exec.Command(b.imo, "pull", "--plain-http", "-q", "scratch", link+"/app:v2", "-o", filepath.Join(dir, "a.tar")), nil
		}},
		{name: fmt.Sprintf("imo pull --volume-size %s MiB --parity 2", mib(volSize)), cmd: func(_ int, dir string) (*exec.Cmd, error) {
			return exec.Command(b.imo, "pull", "--plain-http", "-q", "--volume-size", volSizeArg, "--parity", "2", "scratch", link+"/app:v2", "-o", filepath.Join(dir, "a.tar")), nil
		}},
	}})
	layoutDir := filepath.Join(b.work, "layout")
	lp, err := layout.Write(layoutDir, empty.Index)
	if err != nil {
		return nil, err
	}
	img, err := remote.Image(ref(host + "/app:v2"))
	if err != nil {
		return nil, err
	}
	if err := lp.AppendImage(img); err != nil {
		return nil, err
	}
	base, err := remote.Image(ref(host + "/app:v1"))
	if err != nil {
		return nil, err
	}
	seed := func(repo string) error { return remote.Write(ref(host+"/"+repo+":v1"), base) }
	pushTools := func(kind, archive string, withBase bool) []tool {
		repo := func(t string, r int) string { return fmt.Sprintf("push-%s-%s-%d", kind, t, r) }
		prep := func(t string) func(int) error {
			return func(r int) error {
				if withBase {
					return seed(repo(t, r))
				}
				return nil
			}
		}
		return []tool{
			{name: "go-containerregistry push from a layout (crane push)", prepare: prep("ggcr"), cmd: func(r int, _ string) (*exec.Cmd, error) {
				return exec.Command(b.self, "-role", "ggcr-push", layoutDir, host+"/"+repo("ggcr", r)+":v2"), nil
			}},
			{name: "imo push", prepare: prep("imo"), cmd: func(r int, _ string) (*exec.Cmd, error) {
				return exec.Command(b.imo, "push", "--plain-http", "-q", archive, host+"/"+repo("imo", r)+":v2"), nil
			}},
		}
	}
	out = append(out,
		scenario{name: "push delta into a registry holding v1", baseline: "go-containerregistry push from a layout (crane push)", archive: fileSize(delta), tools: pushTools("delta", delta, true)},
		scenario{name: "push whole into an empty repository", baseline: "go-containerregistry push from a layout (crane push)", archive: fileSize(whole), tools: append(pushTools("whole", whole, false),
			tool{name: "imo push of the volumes, one data volume missing (parity 2)", cmd: func(r int, _ string) (*exec.Cmd, error) {
				return exec.Command(b.imo, "push", "--plain-http", "-q", volumes, fmt.Sprintf("%s/push-volumes-%d:v2", host, r)), nil
			}})},
	)
	return out, nil
}

// The link of the link scenario: each connection capped, each request
// delayed.
const (
	linkBandwidth = 50 << 20
	linkLatency   = 5 * time.Millisecond
)

// measure runs every tool of s in alternation, o.runs times, and prints a row per tool.
func (b *bench) measure(s scenario) error {
	samples := map[string][]sample{}
	for r := range b.o.runs {
		for _, t := range s.tools {
			if t.prepare != nil {
				if err := t.prepare(r); err != nil {
					return err
				}
			}
			dir, err := os.MkdirTemp(b.work, "run-")
			if err != nil {
				return err
			}
			cmd, err := t.cmd(r, dir)
			if err != nil {
				return err
			}
			sm, err := measure(cmd)
			if f, ok := cmd.Stdout.(*os.File); ok {
				f.Close()
			}
			if s.archive == 0 {
				if sz := fileSize(filepath.Join(dir, "a.tar")); sz > 0 && strings.HasPrefix(t.name, "imo pull -o FILE") {
					s.archive = sz
				}
			}
			os.RemoveAll(dir)
			if err != nil {
				return err
			}
			samples[t.name] = append(samples[t.name], sm)
		}
	}
	base := median(samples[s.baseline])
	for _, t := range s.tools {
		m := median(samples[t.name])
		ratio := "—"
		if s.archive > 0 {
			ratio = fmt.Sprintf("%.2f", float64(m.written)/float64(s.archive))
		}
		b.printf("| %s | %s | %.2f | %.2f | %.2f | %.2f | %s | %s | %s |", s.name, t.name, m.elapsed.Seconds(), m.elapsed.Seconds()/base.elapsed.Seconds(),
			m.cpu.Seconds(), m.cpu.Seconds()/base.cpu.Seconds(), mib(m.maxRSS), mib(m.written), ratio)
	}
	return nil
}

// concurrency pulls six layers through a slowed proxy with one job and
// with four.
func (b *bench) concurrency(ctx context.Context, perLayer int64) error {
	fmt.Fprintln(os.Stderr, "building six layers for the concurrency scenario...")
	layers, err := b.layersOf("six", 6*perLayer, 6)
	if err != nil {
		return err
	}
	return b.jobsTable(ctx, "six", layers, "Concurrency: six layers")
}

// bigLayer pulls one large layer through the slowed proxy with one job and
// with four: with four, the layer comes in ranges, four at once.
func (b *bench) bigLayer(ctx context.Context, budget int64) error {
	fmt.Fprintln(os.Stderr, "building one big layer for the ranged scenario...")
	layers, err := b.layersOf("big", budget, 1)
	if err != nil {
		return err
	}
	return b.jobsTable(ctx, "big", layers, "One big layer, fetched in ranges")
}

// layersOf builds n layers from about budget bytes of real files.
func (b *bench) layersOf(name string, budget int64, n int) ([]v1.Layer, error) {
	files, err := collectFiles(budget)
	if err != nil {
		return nil, err
	}
	dir := filepath.Join(b.work, name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	shares := make([]float64, n)
	for k := range shares {
		shares[k] = 1 / float64(n)
	}
	return buildLayers(dir, split(files, shares...), types.DockerLayer)
}

// jobsTable pushes an image of layers as repo:v1 and pulls it to a file
// through a proxy adding latency to every request and capping every
// connection, with one job and with four, checking the archives are the
// same.
func (b *bench) jobsTable(ctx context.Context, repo string, layers []v1.Layer, title string) error {
	img, err := sandbox.Docker.Image(v1.Platform{OS: "linux", Architecture: "amd64"}, layers...)
	if err != nil {
		return err
	}
	if err := remote.Write(ref(b.reg.Host+"/"+repo+":v1"), img); err != nil {
		return err
	}
	const latency, bandwidth = 50 * time.Millisecond, 20 << 20
	proxy := slowProxy("http://"+b.reg.Host, latency, bandwidth)
	defer proxy.Close()
	host := strings.TrimPrefix(proxy.URL, "http://")
	dir := filepath.Join(b.work, repo)
	times := map[int][]sample{}
	sums := map[int]string{}
	for range b.o.runs {
		for _, jobs := range []int{1, 4} {
			out := filepath.Join(dir, fmt.Sprintf("jobs-%d.tar", jobs))
			s, err := measure(exec.CommandContext(ctx, b.imo, "pull", "--plain-http", "-q", "--jobs", fmt.Sprint(jobs), "scratch", host+"/"+repo+":v1", "-o", out))
			if err != nil {
				return err
			}
			times[jobs] = append(times[jobs], s)
			sum, err := sha256File(out)
			if err != nil {
				return err
			}
			sums[jobs] = sum
			os.Remove(out)
		}
	}
	var total int64
	for _, l := range layers {
		sz, _ := l.Size()
		total += sz
	}
	one, four := median(times[1]), median(times[4])
	b.printf("")
	b.printf("%s (%s MiB in all) through a proxy adding %s per request and capping each connection at %s MiB/s.", title, mib(total), latency, mib(bandwidth))
	b.printf("")
	b.printf("| jobs | time (s) | speed-up | CPU (s) | peak RSS (MiB) | archive sha256 |")
	b.printf("|---|---|---|---|---|---|")
	b.printf("| 1 | %.2f | 1.00 | %.2f | %s | %s |", one.elapsed.Seconds(), one.cpu.Seconds(), mib(one.maxRSS), sums[1][:16])
	b.printf("| 4 | %.2f | %.2f | %.2f | %s | %s |", four.elapsed.Seconds(), one.elapsed.Seconds()/four.elapsed.Seconds(), four.cpu.Seconds(), mib(four.maxRSS), sums[4][:16])
	if sums[1] != sums[4] {
		return fmt.Errorf("the archives pulled with 1 and 4 jobs differ")
	}
	return nil
}

func sha256File(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return fmt.Sprintf("%x", h.Sum(nil)), nil
}

// ref parses a reference the benchmark made itself.
func ref(s string) name.Reference {
	r, err := name.ParseReference(s)
	if err != nil {
		panic(err)
	}
	return r
}
