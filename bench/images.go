package main

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"golang.org/x/sync/errgroup"
)

// roots are where the benchmark takes real files from: libraries,
// binaries, documentation and a toolchain, as images hold.
var roots = []string{"/usr/lib", "/usr/bin", "/usr/share", "/usr/local/go", "/usr/libexec"}

// file is a real file to put in a layer under name.
type file struct {
	path string
	name string
	size int64
}

// collectFiles walks roots in a fixed order and returns regular files
// adding up to about budget bytes. When the machine has fewer, it takes
// them again under other names (copy-2/..., copy-3/...).
func collectFiles(budget int64) ([]file, error) {
	pool, err := walkRoots(budget)
	if err != nil {
		return nil, err
	}
	var out []file
	var total int64
	for round := 1; total < budget; round++ {
		for _, f := range pool {
			if total >= budget {
				break
			}
			if round > 1 {
				f.name = fmt.Sprintf("copy-%d/%s", round, f.name)
			}
			out = append(out, f)
			total += f.size
		}
	}
	return out, nil
}

// walkRoots returns up to budget bytes of the files under roots.
func walkRoots(budget int64) ([]file, error) {
	var out []file
	var total int64
	for _, root := range roots {
		err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
			if err != nil || total >= budget {
				if total >= budget {
					return filepath.SkipAll
				}
				return nil // unreadable: skip
			}
			if !d.Type().IsRegular() {
				return nil
			}
			info, err := d.Info()
			if err != nil || info.Size() == 0 || info.Size() > 16<<20 {
				return nil
			}
			f, err := os.Open(path)
			if err != nil {
				return nil
			}
			f.Close()
			out = append(out, file{path: path, name: path[1:], size: info.Size()})
			total += info.Size()
			return nil
		})
		if err != nil {
			return nil, err
		}
	}
	if total == 0 {
		return nil, fmt.Errorf("found no readable files under %v", roots)
	}
	return out, nil
}

// split cuts files into consecutive groups holding about the given
// fractions of their bytes: each file goes to the group its middle byte
// falls in.
func split(files []file, fractions ...float64) [][]file {
	var total int64
	for _, f := range files {
		total += f.size
	}
	groups := make([][]file, len(fractions))
	var acc int64
	for _, f := range files {
		mid := float64(acc+f.size/2) / float64(total)
		g, bound := 0, fractions[0]
		for mid >= bound && g < len(fractions)-1 {
			g++
			bound += fractions[g]
		}
		groups[g] = append(groups[g], f)
		acc += f.size
	}
	return groups
}

// writeLayer writes files, sorted by name, as a gzip-compressed tar
// (level 6, as Docker and BuildKit compress) to path.
func writeLayer(path string, files []file) error {
	sort.Slice(files, func(i, j int) bool { return files[i].name < files[j].name })
	es := make([]entry, len(files))
	for k, f := range files {
		es[k] = entry{name: f.name, size: f.size, open: opener(f.path, false), mtime: time.Unix(1700000000, 0)}
	}
	return writeEntries(path, es)
}

// buildLayers writes one layer per group into dir, two at a time, and
// opens them as go-containerregistry layers of media type mt.
func buildLayers(dir string, groups [][]file, mt types.MediaType) ([]v1.Layer, error) {
	paths := make([]string, len(groups))
	eg := errgroup.Group{}
	eg.SetLimit(2)
	for i, g := range groups {
		paths[i] = filepath.Join(dir, fmt.Sprintf("layer-%d.tar.gz", i))
		eg.Go(func() error { return writeLayer(paths[i], g) })
	}
	if err := eg.Wait(); err != nil {
		return nil, err
	}
	layers := make([]v1.Layer, len(paths))
	for i, p := range paths {
		l, err := tarball.LayerFromFile(p, tarball.WithMediaType(mt))
		if err != nil {
			return nil, err
		}
		layers[i] = l
	}
	return layers, nil
}
