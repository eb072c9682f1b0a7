package sublayer

import "errors"

// Errors that callers branch on with errors.Is.
var (
	// ErrUnsupportedEncoder means no encoder known to this package
	// reproduces the blob, or a recipe names one it does not have: the
	// whole blob must ship.
	ErrUnsupportedEncoder = errors.New("sublayer: unsupported encoder")
	// ErrEncoderMismatch means this build's encoders do not produce the
	// bytes a recipe or the golden vectors need: the delta must not be used.
	ErrEncoderMismatch = errors.New("sublayer: encoder output differs from the pinned encoder")
	// ErrNotWorthwhile means the delta is larger than half of the blob.
	ErrNotWorthwhile = errors.New("sublayer: delta not smaller than half the blob")
	// ErrDigestMismatch means a rebuilt tar or blob does not have the
	// digest it must have.
	ErrDigestMismatch = errors.New("sublayer: rebuilt content does not match its digest")
	// ErrMissingBase means the delta references a base layer or content
	// that the [Base] does not hold.
	ErrMissingBase = errors.New("sublayer: base content missing")
	// ErrFormat means a delta stream is malformed.
	ErrFormat = errors.New("sublayer: malformed delta")
)
