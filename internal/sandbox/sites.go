package sandbox

import (
	"context"
	"crypto/tls"
	"net/http"

	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// Sites are both sides of the gap in one process: a source registry
// holding app:v1 and app:v2 of Pair, and a site registry holding app:v1,
// as a disconnected site that took v1 earlier would.
type Sites struct {
	Source, Site *Registry
	Pair         *AppPair
}

// SitesOptions configure [NewSites].
type SitesOptions struct {
	// Format is the images' format, Docker by default.
	Format Format
	// Platforms are the images' platforms; linux/amd64 and linux/arm64 by
	// default.
	Platforms []string
	// Wrap and TLS configure both registries, as for [NewRegistry].
	Wrap func(http.Handler) http.Handler
	TLS  *tls.Config
	// Write are go-containerregistry options for writing the images (to
	// trust the registries' TLS, or log in).
	Write []remote.Option
}

// NewSites starts the source and site registries and writes their images.
// Close stops them.
func NewSites(ctx context.Context, o SitesOptions) (*Sites, error) {
	if o.Format == (Format{}) {
		o.Format = Docker
	}
	if len(o.Platforms) == 0 {
		o.Platforms = []string{"linux/amd64", "linux/arm64"}
	}
	pair, err := NewAppPair(o.Format, o.Platforms...)
	if err != nil {
		return nil, err
	}
	s := &Sites{Source: NewRegistry(o.Wrap, o.TLS), Site: NewRegistry(o.Wrap, o.TLS), Pair: pair}
	for _, w := range []struct {
		reg *Registry
		ref string
		img Artifact
	}{{s.Source, "app:v1", pair.V1}, {s.Source, "app:v2", pair.V2}, {s.Site, "app:v1", pair.V1}} {
		if err := w.reg.Write(ctx, w.reg.Ref(w.ref), w.img, o.Write...); err != nil {
			s.Close()
			return nil, err
		}
	}
	s.Source.ResetCounts()
	s.Site.ResetCounts()
	return s, nil
}

// Close stops both registries.
func (s *Sites) Close() {
	s.Source.Close()
	s.Site.Close()
}
