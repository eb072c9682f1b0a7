package imo

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"golang.org/x/sync/errgroup"
	"golang.org/x/sync/semaphore"
)

// InventoryVersion is the version of the [Inventory] format this package
// writes. [ReadInventory] accepts this version only.
const InventoryVersion = 1

// MaxInventorySize is the largest inventory, in bytes, that [ReadInventory]
// reads: about 300,000 blobs.
const MaxInventorySize = 64 << 20

// ErrInvalidInventory means an inventory file is not one this package can
// use: not JSON, another version, a bad digest, a negative size, an unknown
// kind, blobs or repositories out of order or listed twice, or larger than
// [MaxInventorySize].
var ErrInvalidInventory = errors.New("invalid inventory")

// The kinds of [InventoryBlob].
const (
	// InventoryManifest is an image manifest or an index.
	InventoryManifest = "manifest"
	// InventoryConfig is an image's config blob.
	InventoryConfig = "config"
	// InventoryLayer is a layer blob.
	InventoryLayer = "layer"
)

// Inventory is what repositories of a registry hold: every manifest, config
// and layer their tags reach, by digest. [Incremental.Inventory] takes one
// at the far side of the gap; [Inventory.Write] stores it as JSON, one
// repository and one blob per line, sorted, so that two inventories diff
// well.
//
// An inventory lists what the tags' manifests reference; it does not ask
// for each blob. Registries hold every blob a manifest they accepted
// references (the distribution registry checks it on push), and
// [Incremental.PushVet] asks again before anything is pushed. Manifests
// that no tag reaches (pushed by digest only) are not listed: the registry
// API cannot list them. Non-distributable (foreign) layers are not listed:
// registries do not hold them.
type Inventory struct {
	// Version is InventoryVersion.
	Version int `json:"imoInventoryVersion"`
	// Registry is the registry's host[:port] as given.
	Registry string `json:"registry"`
	// Prefix is the repository path prefix the inventory was limited to,
	// if any.
	Prefix string `json:"prefix,omitempty"`
	// Taken is when the inventory finished, in UTC.
	Taken time.Time `json:"taken"`
	// Took is how long taking the inventory took. In JSON it is a
	// duration string such as "1.234s" (see [time.ParseDuration]).
	Took time.Duration `json:"took"`
	// Repositories are the repositories inventoried, sorted by Name.
	Repositories []InventoryRepository `json:"repositories"`
	// Blobs are the manifests, configs and layers the repositories hold,
	// sorted by Digest, each digest once.
	Blobs []InventoryBlob `json:"blobs"`
}

// InventoryRepository is one repository of an [Inventory].
type InventoryRepository struct {
	// Name is the repository's full path in the registry, such as
	// "mirror/team/app".
	Name string `json:"name"`
	// Tags are the repository's tags, sorted.
	Tags []string `json:"tags"`
}

// InventoryBlob is one manifest, config or layer of an [Inventory].
type InventoryBlob struct {
	Digest v1.Hash `json:"digest"`
	Size   int64   `json:"size"`
	// Kind is InventoryManifest, InventoryConfig or InventoryLayer. A digest
	// used as several kinds is listed once, as the first of manifest,
	// config, layer.
	Kind string `json:"kind"`
	// MediaType is the media type a manifest declares, or a descriptor
	// gives the blob. Where descriptors disagree (the same layer pushed as
	// Docker and as OCI), it is the first in byte order.
	MediaType types.MediaType `json:"mediaType,omitempty"`
	// Repositories are the names of the repositories holding the blob,
	// sorted.
	Repositories []string `json:"repositories"`
}

// inventoryJSON is the JSON form of an Inventory: Took as a string.
type inventoryJSON struct {
	Version      int                   `json:"imoInventoryVersion"`
	Registry     string                `json:"registry"`
	Prefix       string                `json:"prefix,omitempty"`
	Taken        time.Time             `json:"taken"`
	Took         string                `json:"took"`
	Repositories []InventoryRepository `json:"repositories"`
	Blobs        []InventoryBlob       `json:"blobs"`
}

// MarshalJSON encodes the inventory with Took as a duration string. Use
// [Inventory.Write] for the one-blob-per-line form.
func (inv Inventory) MarshalJSON() ([]byte, error) {
	return json.Marshal(inventoryJSON{
		Version: inv.Version, Registry: inv.Registry, Prefix: inv.Prefix, Taken: inv.Taken,
		Took: inv.Took.String(), Repositories: nonNil(inv.Repositories), Blobs: nonNil(inv.Blobs),
	})
}

// UnmarshalJSON decodes what MarshalJSON encodes. It does not validate; see
// [ReadInventory].
func (inv *Inventory) UnmarshalJSON(b []byte) error {
	var j inventoryJSON
	if err := json.Unmarshal(b, &j); err != nil {
		return err
	}
	var took time.Duration
	if j.Took != "" {
		var err error
		if took, err = time.ParseDuration(j.Took); err != nil {
			return fmt.Errorf("took: %w", err)
		}
	}
	*inv = Inventory{Version: j.Version, Registry: j.Registry, Prefix: j.Prefix, Taken: j.Taken, Took: took, Repositories: j.Repositories, Blobs: j.Blobs}
	return nil
}

func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}

// Write writes the inventory as indented JSON with each repository and
// each blob on a line of its own, and a final newline. The same inventory
// always gives the same bytes.
func (inv *Inventory) Write(w io.Writer) error {
	var b bytes.Buffer
	field := func(key string, v any, last bool) error {
		enc, err := json.Marshal(v)
		if err != nil {
			return fmt.Errorf("encoding inventory %s: %w", key, err)
		}
		fmt.Fprintf(&b, "  %q: %s", key, enc)
		if !last {
			b.WriteByte(',')
		}
		b.WriteByte('\n')
		return nil
	}
	list := func(key string, n int, item func(int) any, last bool) error {
		fmt.Fprintf(&b, "  %q: [", key)
		for k := range n {
			enc, err := json.Marshal(item(k))
			if err != nil {
				return fmt.Errorf("encoding inventory %s: %w", key, err)
			}
			b.WriteString("\n    ")
			b.Write(enc)
			if k < n-1 {
				b.WriteByte(',')
			}
		}
		if n > 0 {
			b.WriteString("\n  ")
		}
		b.WriteByte(']')
		if !last {
			b.WriteByte(',')
		}
		b.WriteByte('\n')
		return nil
	}
	b.WriteString("{\n")
	for _, err := range []error{
		field("imoInventoryVersion", inv.Version, false),
		field("registry", inv.Registry, false),
		func() error {
			if inv.Prefix == "" {
				return nil
			}
			return field("prefix", inv.Prefix, false)
		}(),
		field("taken", inv.Taken, false),
		field("took", inv.Took.String(), false),
		list("repositories", len(inv.Repositories), func(k int) any {
			r := inv.Repositories[k]
			r.Tags = nonNil(r.Tags)
			return r
		}, false),
		list("blobs", len(inv.Blobs), func(k int) any {
			bl := inv.Blobs[k]
			bl.Repositories = nonNil(bl.Repositories)
			return bl
		}, true),
	} {
		if err != nil {
			return err
		}
	}
	b.WriteString("}\n")
	if _, err := w.Write(b.Bytes()); err != nil {
		return fmt.Errorf("writing inventory: %w", err)
	}
	return nil
}

// ReadInventory reads and validates an inventory that [Inventory.Write]
// (or json.Marshal) wrote. An inventory that is not valid JSON, has
// another version, a bad or zero digest, a negative size, an unknown kind,
// repositories, tags or blobs out of order or listed twice, a blob held by
// a repository it does not list, or more than [MaxInventorySize] bytes, is
// an error wrapping [ErrInvalidInventory].
func ReadInventory(r io.Reader) (*Inventory, error) {
	b, err := io.ReadAll(io.LimitReader(r, MaxInventorySize+1))
	if err != nil {
		return nil, fmt.Errorf("reading inventory: %w", err)
	}
	if len(b) > MaxInventorySize {
		return nil, fmt.Errorf("%w: more than %d bytes", ErrInvalidInventory, MaxInventorySize)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	var inv Inventory
	if err := dec.Decode(&inv); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidInventory, err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, fmt.Errorf("%w: data after the inventory", ErrInvalidInventory)
	}
	if err := inv.validate(); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidInventory, err)
	}
	return &inv, nil
}

// LoadInventory reads and validates the inventory in the file at path, as
// [ReadInventory] does.
func LoadInventory(path string) (*Inventory, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("reading inventory: %w", err)
	}
	defer f.Close()
	inv, err := ReadInventory(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return inv, nil
}

// validate checks what ReadInventory promises.
func (inv *Inventory) validate() error {
	switch {
	case inv.Version == 0:
		return errors.New("no imoInventoryVersion: not an imo inventory")
	case inv.Version != InventoryVersion:
		return fmt.Errorf("version %d, this imo reads version %d", inv.Version, InventoryVersion)
	case inv.Registry == "":
		return errors.New("no registry")
	case inv.Taken.IsZero():
		return errors.New("no time taken")
	case inv.Took < 0:
		return fmt.Errorf("took %s: negative", inv.Took)
	case inv.Prefix != "" && !repoPath.MatchString(inv.Prefix):
		return fmt.Errorf("prefix %q is not a repository path", inv.Prefix)
	}
	repos := make(map[string]bool, len(inv.Repositories))
	for k, r := range inv.Repositories {
		if !repoPath.MatchString(r.Name) {
			return fmt.Errorf("repository %d: %q is not a repository path (lower-case components)", k, r.Name)
		}
		if k > 0 && inv.Repositories[k-1].Name >= r.Name {
			return fmt.Errorf("repository %q: repositories are not sorted by name, or one is listed twice", r.Name)
		}
		for t := 1; t < len(r.Tags); t++ {
			if r.Tags[t-1] >= r.Tags[t] {
				return fmt.Errorf("repository %q: tag %q: tags are not sorted, or one is listed twice", r.Name, r.Tags[t])
			}
		}
		repos[r.Name] = true
	}
	for k, bl := range inv.Blobs {
		switch {
		case bl.Digest == (v1.Hash{}):
			return fmt.Errorf("blob %d has no digest", k)
		case k > 0 && inv.Blobs[k-1].Digest.String() >= bl.Digest.String():
			return fmt.Errorf("blob %s: blobs are not sorted by digest, or one is listed twice", bl.Digest)
		case bl.Size < 0:
			return fmt.Errorf("blob %s: negative size %d", bl.Digest, bl.Size)
		case bl.Kind != InventoryManifest && bl.Kind != InventoryConfig && bl.Kind != InventoryLayer:
			return fmt.Errorf("blob %s: kind %q, want manifest, config or layer", bl.Digest, bl.Kind)
		}
		for n, r := range bl.Repositories {
			if n > 0 && bl.Repositories[n-1] >= r {
				return fmt.Errorf("blob %s: repository %q: repositories are not sorted, or one is listed twice", bl.Digest, r)
			}
			if !repos[r] {
				return fmt.Errorf("blob %s: repository %q is not in the inventory's repositories", bl.Digest, r)
			}
		}
	}
	return nil
}

// Blob returns the blob with digest h, and whether the inventory lists it.
// It searches the sorted Blobs, so it answers only for inventories that
// ReadInventory accepts or Incremental.Inventory returns.
func (inv *Inventory) Blob(h v1.Hash) (InventoryBlob, bool) {
	s := h.String()
	k, ok := slices.BinarySearchFunc(inv.Blobs, s, func(b InventoryBlob, s string) int {
		return strings.Compare(b.Digest.String(), s)
	})
	if !ok {
		return InventoryBlob{}, false
	}
	return inv.Blobs[k], true
}

// Inventory lists what repositories of the destination registry hold: for
// each tag, its manifest, and, through indexes, every child manifest, config
// and layer, checked against their digests. It talks to the registry as
// PushVet and Push do (WithPushAuth, WithPlainHTTPPush, WithInsecurePush),
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
func (i *Incremental) Inventory(ctx context.Context, target string, repos ...string) (*Inventory, error) {
	if i.err != nil {
		return nil, i.err
	}
	defer i.push.closeIdle()
	start := time.Now()
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
	inv := &Inventory{Version: InventoryVersion, Registry: host, Prefix: prefix, Repositories: make([]InventoryRepository, len(names)), Blobs: []InventoryBlob{}}
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
	for h, b := range t.blobs {
		ib := InventoryBlob{Digest: h, Size: b.size, Kind: b.kind, MediaType: b.mediaType}
		for r := range b.repos {
			ib.Repositories = append(ib.Repositories, r)
		}
		slices.Sort(ib.Repositories)
		inv.Blobs = append(inv.Blobs, ib)
	}
	slices.SortFunc(inv.Blobs, func(a, b InventoryBlob) int { return strings.Compare(a.Digest.String(), b.Digest.String()) })
	inv.Taken = time.Now().UTC()
	inv.Took = time.Since(start).Round(time.Millisecond)
	return inv, nil
}

// inventoryTarget parses the registry and prefix of Inventory's target and
// turns repos into full repository names, sorted; names is nil when repos
// is empty.
func (i *Incremental) inventoryTarget(host, prefix string, repos []string) (reg name.Registry, names []string, err error) {
	opts := []name.Option{name.StrictValidation}
	if i.opts.plainPush {
		opts = append(opts, name.Insecure)
	}
	if reg, err = name.NewRegistry(host, opts...); err != nil || host == "" || strings.HasSuffix(host, ":") {
		return reg, nil, fmt.Errorf("inventory target %q: want host[:port] or host[:port]/prefix", host)
	}
	check := func(what, path string) error {
		if _, err := name.NewRepository("example.com/"+path, name.StrictValidation); err != nil {
			return fmt.Errorf("inventory %s %q: not a repository path: %w", what, path, err)
		}
		return nil
	}
	if prefix != "" {
		if err := check("prefix", prefix); err != nil {
			return reg, nil, err
		}
	}
	for _, r := range repos {
		full := strings.Trim(r, "/")
		if prefix != "" {
			full = prefix + "/" + full
		}
		if err := check("repository", full); err != nil || strings.Trim(r, "/") == "" {
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
	auth := t.i.opts.pushAuth
	if auth == nil {
		var err error
		if auth, err = authn.Resolve(ctx, t.i.opts.keychain, reg); err != nil {
			return nil, fmt.Errorf("resolving credentials for %s: %w", reg, err)
		}
	}
	var all []string
	err := t.limit(ctx, func() error {
		rt, err := transport.NewWithContext(ctx, reg, auth, t.i.opts.retry.wrap(t.i.push.forHost(reg.RegistryStr())), []string{reg.Scope(transport.PullScope)})
		if err != nil {
			return connectError(reg.RegistryStr(), t.i.push.plainHTTP, err)
		}
		all, err = t.listAll(ctx, &http.Client{Transport: rt}, t.i.push.plainHTTP, reg.RegistryStr(), "/v2/_catalog", "repositories")
		return err
	})
	if err != nil {
		var te *transport.Error
		if errors.As(err, &te) && (te.StatusCode == http.StatusUnauthorized || te.StatusCode == http.StatusForbidden ||
			te.StatusCode == http.StatusNotFound || te.StatusCode == http.StatusMethodNotAllowed || te.StatusCode == http.StatusBadRequest) {
			return nil, fmt.Errorf("listing the repositories of %s: the registry refuses to list its repositories (the catalog API): name the repositories to inventory: %w", reg.RegistryStr(), err)
		}
		return nil, fmt.Errorf("listing the repositories of %s: %w", reg.RegistryStr(), err)
	}
	var names []string
	for _, n := range all {
		// A name that is not a plain repository path cannot be pushed to
		// or mounted from by imo: it is left out.
		if repoPath.MatchString(n) && (prefix == "" || n == prefix || strings.HasPrefix(n, prefix+"/")) {
			names = append(names, n)
		}
	}
	slices.Sort(names)
	return slices.Compact(names), nil
}

// maxListPages bounds how many pages of a catalog or tag list are followed,
// and maxListNames how many names they may hold in all, so that a registry
// cannot make imo page for ever or hold what it sends without end.
const (
	maxListPages = 100_000
	maxListNames = 1_000_000
)

// listAll GETs path on host and every next page its Link headers name, and
// returns the strings under key ("repositories" or "tags") of every page.
//
// It pages by itself rather than through go-containerregistry, which checks
// each next page's scheme against name.Registry.Scheme: that says http for
// loopback and private addresses, where imo speaks HTTPS unless told
// otherwise, so a far-side registry on 10.0.0.5 with TLS would fail on its
// second page.
func (t *inventoryTaker) listAll(ctx context.Context, client *http.Client, plainHTTP bool, host, path, key string) ([]string, error) {
	scheme := "https"
	if plainHTTP {
		scheme = "http"
	}
	next := &url.URL{Scheme: scheme, Host: host, Path: path}
	// A redirect to another host or scheme is refused, as a Link to one is.
	c := *client
	c.CheckRedirect = func(req *http.Request, via []*http.Request) error {
		if req.URL.Scheme != via[0].URL.Scheme || req.URL.Host != via[0].URL.Host {
			return fmt.Errorf("listing %s on %s: redirected to another host, %s", path, host, req.URL.Redacted())
		}
		return nil
	}
	client = &c
	var all []string
	visited := map[string]bool{}
	for n := 0; next != nil; n++ {
		if n == maxListPages {
			return nil, fmt.Errorf("listing %s on %s: more than %d pages", path, host, maxListPages)
		}
		if visited[next.String()] {
			return nil, fmt.Errorf("listing %s on %s: the pages loop back to %s", path, host, next.Redacted())
		}
		visited[next.String()] = true
		var page map[string]json.RawMessage
		var link string
		err := t.i.opts.retry.do(ctx, func() error {
			req, err := http.NewRequestWithContext(ctx, http.MethodGet, next.String(), nil)
			if err != nil {
				return err
			}
			resp, err := client.Do(req)
			if err != nil {
				return err
			}
			defer resp.Body.Close()
			if err := checkAnswer(resp, http.StatusOK); err != nil {
				return err
			}
			body, err := io.ReadAll(io.LimitReader(resp.Body, maxMetadataSize+1))
			if err != nil {
				return err
			}
			if len(body) > maxMetadataSize {
				return fmt.Errorf("listing %s on %s: a page of more than %d bytes", path, host, maxMetadataSize)
			}
			page = nil
			if err := json.Unmarshal(body, &page); err != nil {
				return fmt.Errorf("listing %s on %s: the answer does not parse: %w", path, host, err)
			}
			link = resp.Header.Get("Link")
			return nil
		})
		if err != nil {
			return nil, err
		}
		var names []string
		if raw, ok := page[key]; ok {
			if err := json.Unmarshal(raw, &names); err != nil {
				return nil, fmt.Errorf("listing %s on %s: %q does not parse: %w", path, host, key, err)
			}
		}
		if all = append(all, names...); len(all) > maxListNames {
			return nil, fmt.Errorf("listing %s on %s: more than %d names", path, host, maxListNames)
		}
		if next, err = nextPage(next, link); err != nil {
			return nil, fmt.Errorf("listing %s on %s: %w", path, host, err)
		}
	}
	return all, nil
}

// nextPage resolves the URL a Link header names (`<url>; rel="next"`)
// against cur; it is nil when there is no next page. A link to another
// host or scheme is an error; a link of another relation is no next page.
func nextPage(cur *url.URL, link string) (*url.URL, error) {
	if link == "" {
		return nil, nil
	}
	if _, params, _ := strings.Cut(link, ";"); !strings.Contains(strings.ReplaceAll(params, " ", ""), `rel="next"`) && !strings.Contains(strings.ReplaceAll(params, " ", ""), "rel=next") {
		return nil, nil
	}
	start, end := strings.Index(link, "<"), strings.Index(link, ">")
	if start != 0 || end < 0 {
		return nil, fmt.Errorf("cannot parse Link header %q", link)
	}
	if strings.TrimSpace(link[1:end]) == "" {
		return nil, nil
	}
	u, err := cur.Parse(link[1:end])
	if err != nil {
		return nil, fmt.Errorf("cannot parse Link header %q: %w", link, err)
	}
	if u.Scheme != cur.Scheme || u.Host != cur.Host {
		return nil, fmt.Errorf("the next page %s is not on %s://%s", u.Redacted(), cur.Scheme, cur.Host)
	}
	if u.String() == cur.String() {
		return nil, fmt.Errorf("the next page %s is the page itself", u.Redacted())
	}
	return u, nil
}

// repository inventories one repository: its tags and everything they reach.
// A repository the catalog listed (fromCatalog) may have no tags; one
// named by the caller must exist.
func (t *inventoryTaker) repository(ctx context.Context, repo name.Repository, fromCatalog bool) (InventoryRepository, error) {
	out := InventoryRepository{Name: repo.RepositoryStr(), Tags: []string{}}
	var c *repoClient
	err := t.limit(ctx, func() error {
		var err error
		c, err = newRepoClient(ctx, repo, t.i.push, t.i.opts.pushAuth, t.i.opts.keychain, t.i.opts.retry, []string{repo.Scope(transport.PullScope)})
		return err
	})
	if err != nil {
		return out, err
	}
	var tags []string
	err = t.limit(ctx, func() error {
		var err error
		tags, err = t.listAll(ctx, c.client, c.scheme == "http", repo.RegistryStr(), "/v2/"+repo.RepositoryStr()+"/tags/list", "tags")
		return err
	})
	if err != nil {
		var te *transport.Error
		switch {
		case errors.As(err, &te) && te.StatusCode == http.StatusNotFound && fromCatalog:
			// The catalog lists repositories that hold blobs but no tag
			// yet (an interrupted push, say): nothing to walk.
			return out, nil
		case errors.As(err, &te) && te.StatusCode == http.StatusNotFound:
			return out, fmt.Errorf("repository %s does not exist: %w", repo, err)
		}
		return out, fmt.Errorf("listing the tags of %s: %w", repo, err)
	}
	slices.Sort(tags)
	out.Tags = append(out.Tags, slices.Compact(tags)...)

	// Each manifest is fetched once per repository, however many tags
	// and indexes reach it.
	var mu sync.Mutex
	walked := map[v1.Hash]bool{}
	fetched := map[v1.Hash][]byte{}
	src := func(ctx context.Context, d v1.Descriptor) ([]byte, error) {
		mu.Lock()
		raw, ok := fetched[d.Digest]
		mu.Unlock()
		if ok {
			return raw, nil
		}
		err := t.limit(ctx, func() error {
			var err error
			raw, err = c.manifest(ctx, d)
			return err
		})
		if err != nil {
			return nil, err
		}
		mu.Lock()
		fetched[d.Digest] = raw
		mu.Unlock()
		return raw, nil
	}
	eg, ectx := errgroup.WithContext(ctx)
	eg.SetLimit(t.i.opts.jobs)
	for _, tag := range out.Tags {
		eg.Go(func() error {
			ref, err := name.NewTag(repo.Name()+":"+tag, name.StrictValidation)
			if err != nil {
				return fmt.Errorf("%s lists tag %q: %w", repo, tag, err)
			}
			var top manifestNode
			err = t.limit(ectx, func() error {
				d, err := c.get(ectx, ref)
				if err == nil {
					top = manifestNode{desc: v1.Descriptor{MediaType: d.MediaType, Digest: d.Digest, Size: d.Size}, raw: d.Manifest}
				}
				return err
			})
			if err != nil {
				return err
			}
			mu.Lock()
			done := walked[top.desc.Digest]
			walked[top.desc.Digest] = true
			fetched[top.desc.Digest] = top.raw
			mu.Unlock()
			if done {
				return nil
			}
			g, err := walkImage(ectx, top, src, repo.String(), t.i.opts.jobs)
			if errors.Is(err, ErrUnsupportedMediaType) {
				t.i.opts.reporter.Report(Event{Kind: BlobSkipped, Ref: ref.String(), Digest: top.desc.Digest, MediaType: top.desc.MediaType, Size: top.desc.Size,
					Reason: fmt.Sprintf("inventory lists this manifest alone: %v", err)})
				top.desc.MediaType = manifestMediaType(top)
				return t.record(repo, []manifestNode{top}, nil)
			}
			if err != nil {
				return fmt.Errorf("reading manifests of %s: %w", ref, err)
			}
			return t.record(repo, g.manifests, g.blobs)
		})
	}
	return out, eg.Wait()
}

// kindRank orders kinds for a digest seen as several: the lowest wins.
var kindRank = map[string]int{InventoryManifest: 0, InventoryConfig: 1, InventoryLayer: 2}

// record adds the manifests and blobs of one image in repo. A digest seen
// with two sizes is an error.
func (t *inventoryTaker) record(repo name.Repository, manifests []manifestNode, blobs []*blobUse) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	add := func(d v1.Descriptor, kind string) error {
		b, ok := t.blobs[d.Digest]
		if !ok {
			b = &takenBlob{size: d.Size, kind: kind, mediaType: d.MediaType, repos: map[string]bool{}, where: repo.String()}
			t.blobs[d.Digest] = b
		}
		if b.size != d.Size {
			return fmt.Errorf("%w: %s is %d bytes in %s and %d bytes in %s", ErrInvalidManifest, d.Digest, b.size, b.where, d.Size, repo)
		}
		if kindRank[kind] < kindRank[b.kind] {
			b.kind = kind
		}
		if d.MediaType != "" && (b.mediaType == "" || d.MediaType < b.mediaType) {
			b.mediaType = d.MediaType
		}
		b.repos[repo.RepositoryStr()] = true
		return nil
	}
	for _, m := range manifests {
		if err := add(v1.Descriptor{MediaType: m.desc.MediaType, Digest: m.desc.Digest, Size: int64(len(m.raw))}, InventoryManifest); err != nil {
			return err
		}
	}
	for _, b := range blobs {
		if b.foreign() {
			continue
		}
		kind := InventoryLayer
		if b.config {
			kind = InventoryConfig
		}
		if err := add(b.desc, kind); err != nil {
			return err
		}
	}
	return nil
}
