package imo

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/imokit/imo/internal/graph"
	"github.com/imokit/imo/internal/layout"
	"github.com/imokit/imo/internal/reference"
	"github.com/imokit/imo/internal/registry"
	"github.com/imokit/imo/inventory"
	"golang.org/x/sync/errgroup"
	"golang.org/x/sync/semaphore"
)

// Inventory lists what repositories of the destination registry hold: for
// each tag, its manifest, and, through indexes, every child manifest, config
// and layer, checked against their digests. It talks to the registry as
// PushVet and Push do (WithPushAuth, WithPlainHTTP, WithInsecurePush),
// with up to [WithJobs] requests at once, and reports each repository
// listed as a [RepositoryListed] event.
//
// target is host[:port] or host[:port]/prefix. repos are repository paths
// relative to target: Inventory(ctx, "reg:5000/mirror", "team/app") lists
// reg:5000/mirror/team/app. A repository that does not exist is an error
// naming it. Without repos, Inventory lists the registry's repositories with
// the catalog API and keeps those at or under the prefix; a registry that
// does not offer the catalog is an error asking for repositories by name.
//
// A tree with a manifest imo cannot read (Docker schema 1, say) is listed as
// its top manifest alone, and reported as a [BlobSkipped] event: an
// inventory may list less than the registry holds, never more. A manifest
// whose bytes do not match its digest is a [*DigestMismatchError]; a digest
// that descriptors give two sizes is an error wrapping [ErrInvalidManifest].
func (i *Incremental) Inventory(ctx context.Context, target string, repos ...string) (*inventory.Inventory, error) {
	if i.err != nil {
		return nil, i.err
	}
	defer i.closeIdle()
	start := time.Now()
	if isLayoutDest(target) {
		return i.layoutInventory(ctx, target, repos, start)
	}
	host, prefix, _ := strings.Cut(target, "/")
	prefix = strings.Trim(prefix, "/")
	reg, names, err := i.inventoryTarget(host, prefix, repos)
	if err != nil {
		return nil, err
	}
	t := &inventoryTaker{i: i, sem: semaphore.NewWeighted(int64(i.opts.jobs)), blobs: map[v1.Hash]*takenBlob{}}
	fromCatalog := names == nil
	if fromCatalog {
		if names, err = t.catalog(ctx, reg, prefix); err != nil {
			return nil, err
		}
	}
	inv := &inventory.Inventory{Version: inventory.Version, Registry: host, Prefix: prefix, Repositories: make([]inventory.Repository, len(names))}
	eg, ectx := errgroup.WithContext(ctx)
	eg.SetLimit(i.opts.jobs)
	var listed atomic.Int64
	for k, n := range names {
		eg.Go(func() error {
			var err error
			if inv.Repositories[k], err = t.repository(ectx, reg.Repo(n), fromCatalog); err != nil {
				return err
			}
			i.opts.reporter.Report(Event{Kind: RepositoryListed, Ref: reg.Repo(n).String(), Complete: listed.Add(1), Size: int64(len(names))})
			return nil
		})
	}
	if err := eg.Wait(); err != nil {
		return nil, err
	}
	inv.Blobs = t.list()
	inv.Taken = time.Now().UTC()
	inv.Took = time.Since(start).Round(time.Millisecond)
	return inv, nil
}

// layoutInventory lists what the OCI layout target (oci:DIR) holds: every
// image its index.json lists, with their manifests, configs and layers. A
// layout has no repositories; the inventory's registry is oci:DIR.
func (i *Incremental) layoutInventory(ctx context.Context, target string, repos []string, start time.Time) (*inventory.Inventory, error) {
	loc, err := reference.ParseLocation(target)
	switch {
	case err != nil:
		return nil, fmt.Errorf("inventory target %q: %w", target, err)
	case loc.Tag != "" || loc.Digest != "":
		return nil, fmt.Errorf("inventory target %q: a layout is inventoried whole: give oci:DIR", target)
	case len(repos) > 0:
		return nil, fmt.Errorf("inventory target %q: a layout has no repositories to name", target)
	}
	l, err := layout.Open(loc.Path)
	if err != nil {
		return nil, err
	}
	defer l.Close()
	gs, err := graph.WalkAll(ctx, l.Index().Manifests, l, l.Name())
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", l.Name(), err)
	}
	t := &inventoryTaker{i: i, blobs: map[v1.Hash]*takenBlob{}}
	for _, g := range gs {
		if err := t.record("", l.Name(), g.Manifests, g.Blobs); err != nil {
			return nil, err
		}
	}
	return &inventory.Inventory{Version: inventory.Version, Registry: l.Name(), Repositories: []inventory.Repository{}, Blobs: t.list(),
		Taken: time.Now().UTC(), Took: time.Since(start).Round(time.Millisecond)}, nil
}

// inventoryTarget parses the registry and prefix of Inventory's target and
// turns repos into full repository names, sorted; names is nil when repos
// is empty.
func (i *Incremental) inventoryTarget(host, prefix string, repos []string) (reg name.Registry, names []string, err error) {
	if reg, err = name.NewRegistry(host, append(i.push.NameOptions(), name.StrictValidation)...); err != nil || host == "" || strings.HasSuffix(host, ":") {
		return reg, nil, fmt.Errorf("inventory target %q: want host[:port] or host[:port]/prefix", host)
	}
	if prefix != "" && !reference.RepositoryPath(prefix) {
		return reg, nil, fmt.Errorf("inventory prefix %q: not a repository path", prefix)
	}
	for _, r := range repos {
		full := strings.Trim(r, "/")
		if prefix != "" {
			full = prefix + "/" + full
		}
		if !reference.RepositoryPath(full) || strings.Trim(r, "/") == "" {
			return reg, nil, fmt.Errorf("inventory repository %q: not a repository path", r)
		}
		names = append(names, full)
	}
	slices.Sort(names)
	return reg, slices.Compact(names), nil
}

// inventoryTaker collects what the repositories of one inventory hold.
type inventoryTaker struct {
	i   *Incremental
	sem *semaphore.Weighted // bounds the requests in flight to WithJobs

	mu    sync.Mutex
	blobs map[v1.Hash]*takenBlob
}

// takenBlob is a blob as far as the inventory has seen it.
type takenBlob struct {
	size      int64
	kind      string
	mediaType types.MediaType
	repos     map[string]bool
	where     string // the repository it was first seen in, for errors
}

// limit runs f, which makes one request (or one request and its retries),
// when fewer than WithJobs others are running.
func (t *inventoryTaker) limit(ctx context.Context, f func() error) error {
	if err := t.sem.Acquire(ctx, 1); err != nil {
		return err
	}
	defer t.sem.Release(1)
	return f()
}

// catalog lists the repositories of reg at or under prefix.
func (t *inventoryTaker) catalog(ctx context.Context, reg name.Registry, prefix string) ([]string, error) {
	var all []string
	err := t.limit(ctx, func() error {
		var err error
		all, err = t.i.push.Catalog(ctx, reg)
		return err
	})
	if err != nil {
		switch registry.Status(err) {
		case http.StatusUnauthorized, http.StatusForbidden, http.StatusNotFound, http.StatusMethodNotAllowed, http.StatusBadRequest:
			return nil, fmt.Errorf("listing the repositories of %s: the registry refuses to list its repositories (the catalog API): name the repositories to inventory: %w", reg.RegistryStr(), err)
		}
		return nil, fmt.Errorf("listing the repositories of %s: %w", reg.RegistryStr(), err)
	}
	var names []string
	for _, n := range all {
		// A name that is not a plain repository path cannot be pushed to
		// or mounted from by imo: it is left out.
		if reference.RepositoryPath(n) && (prefix == "" || n == prefix || strings.HasPrefix(n, prefix+"/")) {
			names = append(names, n)
		}
	}
	slices.Sort(names)
	return slices.Compact(names), nil
}

// repository inventories one repository: its tags and everything they reach.
// A repository the catalog listed (fromCatalog) may have no tags; one
// named by the caller must exist.
func (t *inventoryTaker) repository(ctx context.Context, repoName name.Repository, fromCatalog bool) (inventory.Repository, error) {
	out := inventory.Repository{Name: repoName.RepositoryStr(), Tags: []string{}}
	var repo *registry.Repository
	err := t.limit(ctx, func() error {
		var err error
		repo, err = t.i.push.Open(ctx, repoName)
		return err
	})
	if err != nil {
		return out, err
	}
	var tags []string
	err = t.limit(ctx, func() error {
		var err error
		tags, err = repo.Tags(ctx)
		return err
	})
	switch {
	case registry.Status(err) == http.StatusNotFound && fromCatalog:
		// The catalog lists repositories that hold blobs but no tag yet
		// (an interrupted push, say): nothing to walk.
		return out, nil
	case registry.Status(err) == http.StatusNotFound:
		return out, fmt.Errorf("repository %s does not exist: %w", repoName, err)
	case err != nil:
		return out, fmt.Errorf("listing the tags of %s: %w", repoName, err)
	}
	slices.Sort(tags)
	out.Tags = append(out.Tags, slices.Compact(tags)...)
	return out, t.tags(ctx, repo, out.Tags)
}

// tags walks what each tag of repo reaches, each manifest fetched once
// however many tags and indexes reach it.
func (t *inventoryTaker) tags(ctx context.Context, repo *registry.Repository, tags []string) error {
	src := &onceFetcher{t: t, repo: repo, walked: map[v1.Hash]bool{}, fetched: map[v1.Hash][]byte{}}
	eg, ectx := errgroup.WithContext(ctx)
	eg.SetLimit(t.i.opts.jobs)
	for _, tag := range tags {
		eg.Go(func() error {
			ref, err := name.NewTag(repo.Name().Name()+":"+tag, name.StrictValidation)
			if err != nil {
				return fmt.Errorf("%s lists tag %q: %w", repo.Name(), tag, err)
			}
			var top graph.Node
			err = t.limit(ectx, func() error {
				var err error
				top, err = repo.Get(ectx, ref)
				return err
			})
			if err != nil || !src.first(top) {
				return err
			}
			g, err := graph.Walk(ectx, top, src, repo.Name().String(), t.i.opts.jobs)
			if errors.Is(err, ErrUnsupportedMediaType) {
				t.i.opts.reporter.Report(Event{Kind: BlobSkipped, Ref: ref.String(), Digest: top.Desc.Digest, MediaType: top.Desc.MediaType, Size: top.Desc.Size,
					Reason: fmt.Sprintf("inventory lists this manifest alone: %v", err)})
				top.Desc.MediaType = graph.MediaType(top)
				return t.record(repo.Name().RepositoryStr(), repo.Name().String(), []graph.Node{top}, nil)
			}
			if err != nil {
				return fmt.Errorf("reading manifests of %s: %w", ref, err)
			}
			return t.record(repo.Name().RepositoryStr(), repo.Name().String(), g.Manifests, g.Blobs)
		})
	}
	return eg.Wait()
}

// onceFetcher fetches each manifest of a repository once, within the
// inventory's request limit.
type onceFetcher struct {
	t       *inventoryTaker
	repo    *registry.Repository
	mu      sync.Mutex
	walked  map[v1.Hash]bool // tops already walked
	fetched map[v1.Hash][]byte
}

// first records the top manifest of a tag and reports whether no tag
// before reached it.
func (f *onceFetcher) first(top graph.Node) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	done := f.walked[top.Desc.Digest]
	f.walked[top.Desc.Digest] = true
	f.fetched[top.Desc.Digest] = top.Raw
	return !done
}

// Manifest implements [graph.Fetcher].
func (f *onceFetcher) Manifest(ctx context.Context, d v1.Descriptor) ([]byte, error) {
	f.mu.Lock()
	raw, ok := f.fetched[d.Digest]
	f.mu.Unlock()
	if ok {
		return raw, nil
	}
	err := f.t.limit(ctx, func() error {
		var err error
		raw, err = f.repo.Manifest(ctx, d)
		return err
	})
	if err != nil {
		return nil, err
	}
	f.mu.Lock()
	f.fetched[d.Digest] = raw
	f.mu.Unlock()
	return raw, nil
}

// kindRank orders kinds for a digest seen as several: the lowest wins.
var kindRank = map[string]int{inventory.KindManifest: 0, inventory.KindConfig: 1, inventory.KindLayer: 2}

// record adds the manifests and blobs of one image in the repository
// path (none for a layout), which errors call where. A digest seen with
// two sizes is an error.
func (t *inventoryTaker) record(path, where string, manifests []graph.Node, blobs []*graph.Blob) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, m := range manifests {
		if err := t.add(path, where, v1.Descriptor{MediaType: m.Desc.MediaType, Digest: m.Desc.Digest, Size: int64(len(m.Raw))}, inventory.KindManifest); err != nil {
			return err
		}
	}
	for _, b := range blobs {
		if b.Foreign() {
			continue
		}
		kind := inventory.KindLayer
		if b.Config {
			kind = inventory.KindConfig
		}
		if err := t.add(path, where, b.Desc, kind); err != nil {
			return err
		}
	}
	return nil
}

// add records that the repository path (none for a layout), which errors
// call where, holds d as kind; the caller holds t.mu.
func (t *inventoryTaker) add(path, where string, d v1.Descriptor, kind string) error {
	b, ok := t.blobs[d.Digest]
	if !ok {
		b = &takenBlob{size: d.Size, kind: kind, mediaType: d.MediaType, repos: map[string]bool{}, where: where}
		t.blobs[d.Digest] = b
	}
	if b.size != d.Size {
		return fmt.Errorf("%w: %s is %d bytes in %s and %d bytes in %s", ErrInvalidManifest, d.Digest, b.size, b.where, d.Size, where)
	}
	if kindRank[kind] < kindRank[b.kind] {
		b.kind = kind
	}
	if d.MediaType != "" && (b.mediaType == "" || d.MediaType < b.mediaType) {
		b.mediaType = d.MediaType
	}
	if path != "" {
		b.repos[path] = true
	}
	return nil
}

// list is every blob seen, sorted by digest, with its repositories sorted.
func (t *inventoryTaker) list() []inventory.Blob {
	out := []inventory.Blob{}
	for h, b := range t.blobs {
		ib := inventory.Blob{Digest: h, Size: b.size, Kind: b.kind, MediaType: b.mediaType}
		for r := range b.repos {
			ib.Repositories = append(ib.Repositories, r)
		}
		slices.Sort(ib.Repositories)
		out = append(out, ib)
	}
	slices.SortFunc(out, func(a, b inventory.Blob) int { return strings.Compare(a.Digest.String(), b.Digest.String()) })
	return out
}
