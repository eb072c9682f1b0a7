package main

import (
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/imokit/imo/internal/sandbox"
)

// bundleImages is how many images the bundle scenario ships.
const bundleImages = 20

// bundle builds twenty images that share app:v2's OS and runtime layers,
// each with its own small application layer, in twenty repositories. It
// pulls them whole into one bundle and compares peak memory with the pull
// of app:v2 alone, then pushes the bundle into a prefix through a counting
// proxy: each shared layer must be uploaded once and mounted into the
// other repositories.
func (b *bench) bundle(shared []v1.Layer) error {
	fmt.Fprintln(os.Stderr, "building a bundle of twenty images...")
	host := b.reg.Host
	amd64 := v1.Platform{OS: "linux", Architecture: "amd64"}
	var list strings.Builder
	for n := range bundleImages {
		own, err := sandbox.Layer(types.DockerLayer, fmt.Sprintf("app/%d/notes.txt", n), sandbox.Text(fmt.Sprint("bundle", n), 1<<20))
		if err != nil {
			return err
		}
		img, err := sandbox.Docker.Image(amd64, append(shared, own)...)
		if err != nil {
			return err
		}
		repo := fmt.Sprintf("%s/product/app%02d:v2", host, n)
		if err := remote.Write(ref(repo), img); err != nil {
			return err
		}
		fmt.Fprintf(&list, "scratch %s\n", repo)
	}
	dir := filepath.Join(b.work, "bundle")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	from := filepath.Join(dir, "release.txt")
	if err := os.WriteFile(from, []byte(list.String()), 0o644); err != nil {
		return err
	}
	archive := filepath.Join(dir, "bundle.tar")
	one := filepath.Join(dir, "one.tar")
	var single, many []sample
	for range b.o.runs {
		s, err := measure(exec.Command(b.imo, "pull", "--plain-http", "-q", "scratch", host+"/app:v2", "-o", one))
		if err != nil {
			return err
		}
		single = append(single, s)
		if s, err = measure(exec.Command(b.imo, "pull", "--plain-http", "-q", "--from", from, "-o", archive)); err != nil {
			return err
		}
		many = append(many, s)
	}

	proxy := sandbox.NewProxy(host)
	defer proxy.Close()
	push, err := measure(exec.Command(b.imo, "push", "--plain-http", "-q", archive, proxy.Host+"/site"))
	if err != nil {
		return err
	}
	var sharedBytes int64
	uploads, mounts := 0, 0
	for _, l := range shared {
		h, err := l.Digest()
		if err != nil {
			return err
		}
		size, _ := l.Size()
		sharedBytes += size
		uploads += proxy.Count(http.MethodPut, "digest="+h.String())
		mounts += proxy.Count(http.MethodPost, "mount="+h.String())
	}
	s1, s20 := median(single), median(many)
	b.printf("")
	b.printf("Bundle: %d whole images sharing %d layers (%s MiB), each with its own 1 MiB text layer; archive %s MiB (one image alone: %s MiB).", bundleImages, len(shared), mib(sharedBytes), mib(fileSize(archive)), mib(fileSize(one)))
	b.printf("")
	b.printf("| job | time (s) | CPU (s) | peak RSS (MiB) | written ÷ archive |")
	b.printf("|---|---|---|---|---|")
	b.printf("| imo pull, one image | %.2f | %.2f | %s | %.2f |", s1.elapsed.Seconds(), s1.cpu.Seconds(), mib(s1.maxRSS), float64(s1.written)/float64(fileSize(one)))
	b.printf("| imo pull --from, %d images | %.2f | %.2f | %s | %.2f |", bundleImages, s20.elapsed.Seconds(), s20.cpu.Seconds(), mib(s20.maxRSS), float64(s20.written)/float64(fileSize(archive)))
	b.printf("| imo push of the bundle into a prefix | %.2f | %s | — |", push.elapsed.Seconds(), mib(push.maxRSS))
	b.printf("")
	b.printf("The push uploaded the %d shared layers %d times in all and mounted them %d times (want %d uploads and %d mounts).", len(shared), uploads, mounts, len(shared), len(shared)*(bundleImages-1))
	if uploads != len(shared) || mounts != len(shared)*(bundleImages-1) {
		return fmt.Errorf("the bundle push uploaded shared layers %d times and mounted them %d times", uploads, mounts)
	}
	return nil
}
