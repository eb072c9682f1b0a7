// Package imo moves container images into places the internet does not
// reach, carrying only what changed.
//
// [Incremental.Pull] compares two images in a registry, a base the far side
// already has and a final one it needs, and streams a tar archive holding
// everything final needs that base lacks. [Incremental.PushVet] checks that
// a destination registry holds every blob such an archive leaves out, and
// [Incremental.Push] uploads the archive so that the destination ends up
// with exactly the final image, digest for digest.
//
// The archive is an OCI image layout in a plain tar (see [LayoutFile],
// [IndexFile], [PlanFile]): every manifest and config byte for byte as the
// registry served them, Docker media types kept, and only the layers that
// no platform of base has.
package imo

import "fmt"

// Incremental pulls, vets and pushes the difference between two images. It
// is safe for concurrent use. Create one with [New].
type Incremental struct {
	opts options
	pull *sideTransport
	push *sideTransport
	err  error
}

// New returns an Incremental configured by opts. Invalid or conflicting
// options are reported, wrapped in [ErrInvalidOption], by every method of
// the returned Incremental.
func New(opts ...Option) *Incremental {
	i := &Incremental{opts: defaultOptions()}
	for _, opt := range opts {
		opt(&i.opts)
	}
	if i.err = i.opts.validate(); i.err != nil {
		return i
	}
	var err error
	if i.pull, err = newSideTransport(&i.opts, i.opts.insecurePull, i.opts.plainPull, i.opts.namespace); err != nil {
		i.err = fmt.Errorf("configuring pull transport: %w", err)
		return i
	}
	if i.push, err = newSideTransport(&i.opts, i.opts.insecurePush, i.opts.plainPush, ""); err != nil {
		i.err = fmt.Errorf("configuring push transport: %w", err)
	}
	return i
}
