// Package inventory reads and writes imo's inventory files: what the
// repositories of a registry hold, every manifest, config and layer by
// digest, with the repositories that hold each. The far side of the gap
// takes one (imo inventory); a pull leaves out every blob it lists. The
// format is JSON, sorted, one repository and one blob per line, so that two
// inventories diff well. This package holds the format alone: no network.
package inventory

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/imokit/imo/internal/reference"
)

// Version is the version of the [Inventory] format this package
// writes. [Read] accepts this version only.
const Version = 1

// MaxSize is the largest inventory, in bytes, that [Read]
// reads: about 300,000 blobs.
const MaxSize = 64 << 20

// ErrInvalid means an inventory file is not one this package can
// use: not JSON, another version, a bad digest, a negative size, an unknown
// kind, blobs or repositories out of order or listed twice, or larger than
// [MaxSize].
var ErrInvalid = errors.New("invalid inventory")

// The kinds of [Blob].
const (
	// KindManifest is an image manifest or an index.
	KindManifest = "manifest"
	// KindConfig is an image's config blob.
	KindConfig = "config"
	// KindLayer is a layer blob.
	KindLayer = "layer"
)

// Inventory is what repositories of a registry hold: every manifest, config
// and layer their tags reach, by digest. imo's Incremental.Inventory takes one
// at the far side of the gap; [Inventory.Write] stores it as JSON, one
// repository and one blob per line, sorted, so that two inventories diff
// well.
//
// An inventory lists what the tags' manifests reference; it does not ask
// for each blob. Registries hold every blob a manifest they accepted
// references (the distribution registry checks it on push), and
// imo's vet asks again before anything is pushed. Manifests
// that no tag reaches (pushed by digest only) are not listed: the registry
// API cannot list them. Non-distributable (foreign) layers are not listed:
// registries do not hold them.
type Inventory struct {
	// Version is the format version, [Version].
	Version int `json:"imoInventoryVersion"`
	// Registry is the registry's host[:port] as given, or, for an OCI
	// layout, oci:DIR.
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
	Repositories []Repository `json:"repositories"`
	// Blobs are the manifests, configs and layers the repositories hold,
	// sorted by Digest, each digest once.
	Blobs []Blob `json:"blobs"`
}

// Repository is one repository of an [Inventory].
type Repository struct {
	// Name is the repository's full path in the registry, such as
	// "mirror/team/app".
	Name string `json:"name"`
	// Tags are the repository's tags, sorted.
	Tags []string `json:"tags"`
}

// Blob is one manifest, config or layer of an [Inventory].
type Blob struct {
	Digest v1.Hash `json:"digest"`
	Size   int64   `json:"size"`
	// Kind is KindManifest, KindConfig or KindLayer. A digest
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

// fileJSON is the JSON form of an Inventory: Took as a string.
type fileJSON struct {
	Version      int          `json:"imoInventoryVersion"`
	Registry     string       `json:"registry"`
	Prefix       string       `json:"prefix,omitempty"`
	Taken        time.Time    `json:"taken"`
	Took         string       `json:"took"`
	Repositories []Repository `json:"repositories"`
	Blobs        []Blob       `json:"blobs"`
}

// MarshalJSON encodes the inventory with Took as a duration string. Use
// [Inventory.Write] for the one-blob-per-line form.
func (inv Inventory) MarshalJSON() ([]byte, error) {
	return json.Marshal(fileJSON{
		Version: inv.Version, Registry: inv.Registry, Prefix: inv.Prefix, Taken: inv.Taken,
		Took: inv.Took.String(), Repositories: nonNil(inv.Repositories), Blobs: nonNil(inv.Blobs),
	})
}

// UnmarshalJSON decodes what MarshalJSON encodes. It does not validate; see
// [Read].
func (inv *Inventory) UnmarshalJSON(b []byte) error {
	var j fileJSON
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
	b.WriteString("{\n")
	fields := []struct {
		key string
		v   any
	}{{"imoInventoryVersion", inv.Version}, {"registry", inv.Registry}, {"prefix", inv.Prefix}, {"taken", inv.Taken}, {"took", inv.Took.String()}}
	for _, f := range fields {
		if f.key == "prefix" && inv.Prefix == "" {
			continue
		}
		if err := writeJSONLine(&b, "  %q: ", f.key, f.v, ",\n"); err != nil {
			return err
		}
	}
	repos := make([]any, len(inv.Repositories))
	for k, r := range inv.Repositories {
		r.Tags = nonNil(r.Tags)
		repos[k] = r
	}
	blobs := make([]any, len(inv.Blobs))
	for k, bl := range inv.Blobs {
		bl.Repositories = nonNil(bl.Repositories)
		blobs[k] = bl
	}
	if err := writeList(&b, "repositories", repos, ",\n"); err != nil {
		return err
	}
	if err := writeList(&b, "blobs", blobs, "\n"); err != nil {
		return err
	}
	b.WriteString("}\n")
	if _, err := w.Write(b.Bytes()); err != nil {
		return fmt.Errorf("writing inventory: %w", err)
	}
	return nil
}

// writeJSONLine writes prefix (formatted with key), v as JSON, and end.
func writeJSONLine(b *bytes.Buffer, prefix, key string, v any, end string) error {
	enc, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encoding inventory %s: %w", key, err)
	}
	fmt.Fprintf(b, prefix, key)
	b.Write(enc)
	b.WriteString(end)
	return nil
}

// writeList writes "key": [...] with each item on a line of its own.
func writeList(b *bytes.Buffer, key string, items []any, end string) error {
	fmt.Fprintf(b, "  %q: [", key)
	for k, item := range items {
		sep := ","
		if k == len(items)-1 {
			sep = "\n  "
		}
		if err := writeJSONLine(b, "\n    %.0s", key, item, sep); err != nil {
			return err
		}
	}
	b.WriteString("]" + end)
	return nil
}

// Read reads and validates an inventory that [Inventory.Write]
// (or json.Marshal) wrote. An inventory that is not valid JSON, has
// another version, a bad or zero digest, a negative size, an unknown kind,
// repositories, tags or blobs out of order or listed twice, a blob held by
// a repository it does not list, or more than [MaxSize] bytes, is
// an error wrapping [ErrInvalid].
func Read(r io.Reader) (*Inventory, error) {
	b, err := io.ReadAll(io.LimitReader(r, MaxSize+1))
	if err != nil {
		return nil, fmt.Errorf("reading inventory: %w", err)
	}
	if len(b) > MaxSize {
		return nil, fmt.Errorf("%w: more than %d bytes", ErrInvalid, MaxSize)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	var inv Inventory
	if err := dec.Decode(&inv); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, fmt.Errorf("%w: data after the inventory", ErrInvalid)
	}
	if err := inv.validate(); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	return &inv, nil
}

// Load reads and validates the inventory in the file at path, as
// [Read] does.
func Load(path string) (*Inventory, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("reading inventory: %w", err)
	}
	defer f.Close()
	inv, err := Read(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return inv, nil
}

// validate checks what Read promises.
func (inv *Inventory) validate() error {
	switch {
	case inv.Version == 0:
		return errors.New("no imoInventoryVersion: not an imo inventory")
	case inv.Version != Version:
		return fmt.Errorf("version %d, this imo reads version %d", inv.Version, Version)
	case inv.Registry == "":
		return errors.New("no registry")
	case inv.Taken.IsZero():
		return errors.New("no time taken")
	case inv.Took < 0:
		return fmt.Errorf("took %s: negative", inv.Took)
	case inv.Prefix != "" && !reference.RepositoryPath(inv.Prefix):
		return fmt.Errorf("prefix %q is not a repository path", inv.Prefix)
	}
	repos := make(map[string]bool, len(inv.Repositories))
	for k, r := range inv.Repositories {
		if !reference.RepositoryPath(r.Name) {
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
		case bl.Kind != KindManifest && bl.Kind != KindConfig && bl.Kind != KindLayer:
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

// Name is the registry and prefix the inventory covers, host[:port]/prefix.
func (inv *Inventory) Name() string {
	if inv.Prefix == "" {
		return inv.Registry
	}
	return inv.Registry + "/" + inv.Prefix
}

// Blob returns the blob with digest h, and whether the inventory lists it.
// It searches the sorted Blobs, so it answers only for inventories that
// Read accepts or imo takes.
func (inv *Inventory) Blob(h v1.Hash) (Blob, bool) {
	s := h.String()
	k, ok := slices.BinarySearchFunc(inv.Blobs, s, func(b Blob, s string) int {
		return strings.Compare(b.Digest.String(), s)
	})
	if !ok {
		return Blob{}, false
	}
	return inv.Blobs[k], true
}
