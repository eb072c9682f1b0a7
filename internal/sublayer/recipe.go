package sublayer

import (
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"runtime"
	"strings"

	kgzip "github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	"github.com/klauspost/pgzip"
)

// Encoder names recorded in a [Recipe].
const (
	// EncoderNone stores the tar uncompressed.
	EncoderNone = "none"
	// EncoderGzip is the Go standard library's compress/gzip.
	EncoderGzip = "gzip"
	// EncoderKlauspostGzip is github.com/klauspost/compress/gzip.
	EncoderKlauspostGzip = "klauspost-gzip"
	// EncoderPgzip is github.com/klauspost/pgzip.
	EncoderPgzip = "pgzip"
	// EncoderZstd is github.com/klauspost/compress/zstd in streaming mode.
	EncoderZstd = "zstd"
)

// Module versions whose encoders this package is built with. A test checks
// them against the build; golden vectors ([CheckEncoders]) check that the
// encoders still produce the bytes they produced when the vectors were made.
const (
	compressModule  = "github.com/klauspost/compress"
	compressVersion = "v1.19.2"
	pgzipModule     = "github.com/klauspost/pgzip"
	pgzipVersion    = "v1.2.6"
)

// PgzipBlockSize is the block size that containers/image (podman, buildah,
// skopeo) uses through pgzip's defaults.
const PgzipBlockSize = 1 << 20

// Recipe says how to turn an uncompressed layer tar back into the exact
// compressed blob. It is JSON-serializable and travels in a delta's header.
type Recipe struct {
	// Encoder is one of the Encoder* names.
	Encoder string `json:"encoder"`
	// Version is the version of the encoder's code: the Go toolchain for
	// [EncoderGzip], the module version for the others.
	Version string `json:"version"`
	// Level is the compression level as the encoder's own API takes it:
	// 1–9 for the gzip encoders, a zstd.EncoderLevel (1 fastest, 2 default,
	// 3 better, 4 best) for [EncoderZstd], 0 for [EncoderNone].
	Level int `json:"level"`
	// BlockSize is pgzip's block size; zero for the other encoders.
	BlockSize int `json:"blockSize,omitempty"`
	// Header is the original gzip header; a gzip encoder's own 10-byte
	// header is replaced by it. Empty for zstd and none.
	Header []byte `json:"header,omitempty"`
}

// String describes r for messages.
func (r *Recipe) String() string {
	s := fmt.Sprintf("%s %s level %d", r.Encoder, r.Version, r.Level)
	if r.BlockSize != 0 {
		s += fmt.Sprintf(" block %d", r.BlockSize)
	}
	return s
}

// encoderVersion is the version this build records for an encoder.
func encoderVersion(encoder string) string {
	switch encoder {
	case EncoderGzip:
		return runtime.Version()
	case EncoderKlauspostGzip, EncoderZstd:
		return compressVersion
	case EncoderPgzip:
		return pgzipVersion + "+compress." + compressVersion
	}
	return ""
}

// goSeries turns "go1.26.8" into "go1.26".
func goSeries(v string) string {
	parts := strings.SplitN(v, ".", 3)
	if len(parts) < 2 {
		return v
	}
	return parts[0] + "." + parts[1]
}

// compatible reports whether this build's encoder for r.Encoder is the one
// r was made with. The Go standard library's compress/flate output has been
// stable within and across releases up to Go 1.26 and is compared by
// release series; module encoders must match exactly.
func (r *Recipe) compatible() error {
	if err := r.valid(); err != nil {
		return err
	}
	have := encoderVersion(r.Encoder)
	switch r.Encoder {
	case EncoderNone:
		return nil
	case EncoderGzip:
		if goSeries(have) == goSeries(r.Version) {
			return nil
		}
	default:
		if have == r.Version {
			return nil
		}
	}
	return fmt.Errorf("%w: recipe needs %s %s, this build has %s", ErrEncoderMismatch, r.Encoder, r.Version, have)
}

// valid checks r's fields without looking at versions.
func (r *Recipe) valid() error {
	switch r.Encoder {
	case EncoderNone:
		return nil
	case EncoderGzip, EncoderKlauspostGzip:
		if r.Level < 1 || r.Level > 9 {
			return fmt.Errorf("%w: %s level %d", ErrUnsupportedEncoder, r.Encoder, r.Level)
		}
	case EncoderPgzip:
		if r.Level < 1 || r.Level > 9 {
			return fmt.Errorf("%w: %s level %d", ErrUnsupportedEncoder, r.Encoder, r.Level)
		}
		if r.BlockSize != PgzipBlockSize {
			return fmt.Errorf("%w: pgzip block size %d", ErrUnsupportedEncoder, r.BlockSize)
		}
	case EncoderZstd:
		if r.Level < int(zstd.SpeedFastest) || r.Level > int(zstd.SpeedBestCompression) {
			return fmt.Errorf("%w: zstd level %d", ErrUnsupportedEncoder, r.Level)
		}
	default:
		return fmt.Errorf("%w: %q", ErrUnsupportedEncoder, r.Encoder)
	}
	if r.Encoder != EncoderZstd && len(r.Header) > 0 {
		if _, err := gzipHeaderLen(r.Header); err != nil || len(r.Header) > maxGzipHeader {
			return fmt.Errorf("%w: malformed gzip header in recipe", ErrUnsupportedEncoder)
		}
	}
	return nil
}

// Compress returns a writer that compresses what is written to it into w
// exactly as the recipe's encoder does. The caller must Close it to write
// the stream's end; Close does not close w. The returned writer has only
// Write and Close, so io.Copy feeds it through Write: zstd's ReadFrom would
// flush partial blocks and change the bytes.
func (r *Recipe) Compress(w io.Writer) (io.WriteCloser, error) {
	if err := r.valid(); err != nil {
		return nil, err
	}
	gw := w
	if len(r.Header) > 0 && r.Encoder != EncoderNone && r.Encoder != EncoderZstd {
		gw = &headerSwap{w: w, header: r.Header, skip: 10}
	}
	switch r.Encoder {
	case EncoderNone:
		return nopCloser{w}, nil
	case EncoderGzip:
		z, err := gzip.NewWriterLevel(gw, r.Level)
		if err != nil {
			return nil, err
		}
		return writeOnly{z}, nil
	case EncoderKlauspostGzip:
		z, err := kgzip.NewWriterLevel(gw, r.Level)
		if err != nil {
			return nil, err
		}
		return writeOnly{z}, nil
	case EncoderPgzip:
		z, err := pgzip.NewWriterLevel(gw, r.Level)
		if err != nil {
			return nil, err
		}
		if err := z.SetConcurrency(r.BlockSize, max(2, runtime.GOMAXPROCS(0))); err != nil {
			return nil, err
		}
		return writeOnly{z}, nil
	case EncoderZstd:
		z, err := zstd.NewWriter(w, zstd.WithEncoderLevel(zstd.EncoderLevel(r.Level)))
		if err != nil {
			return nil, err
		}
		return writeOnly{z}, nil
	}
	return nil, fmt.Errorf("%w: %q", ErrUnsupportedEncoder, r.Encoder)
}

// writeOnly hides every method but Write and Close.
type writeOnly struct{ w io.WriteCloser }

func (w writeOnly) Write(p []byte) (int, error) { return w.w.Write(p) }
func (w writeOnly) Close() error                { return w.w.Close() }

type nopCloser struct{ w io.Writer }

func (w nopCloser) Write(p []byte) (int, error) { return w.w.Write(p) }
func (nopCloser) Close() error                  { return nil }

// headerSwap drops the first skip bytes written to it and writes header in
// their place. The gzip encoders used here write a 10-byte header.
type headerSwap struct {
	w      io.Writer
	header []byte
	skip   int
	done   bool
}

func (h *headerSwap) Write(p []byte) (int, error) {
	n := len(p)
	if h.skip > 0 {
		k := min(h.skip, len(p))
		h.skip -= k
		p = p[k:]
	}
	if !h.done && h.skip == 0 {
		h.done = true
		if _, err := h.w.Write(h.header); err != nil {
			return 0, err
		}
	}
	if len(p) > 0 {
		if _, err := h.w.Write(p); err != nil {
			return 0, err
		}
	}
	return n, nil
}

const maxGzipHeader = 64 << 10

// gzipHeaderLen returns the length of the gzip member header at the start
// of b, or an error if b does not hold a whole one.
func gzipHeaderLen(b []byte) (int, error) {
	if len(b) < 10 || b[0] != 0x1f || b[1] != 0x8b || b[2] != 8 {
		return 0, fmt.Errorf("not a gzip header")
	}
	flg := b[3]
	n := 10
	if flg&0x04 != 0 {
		if len(b) < n+2 {
			return 0, io.ErrUnexpectedEOF
		}
		n += 2 + (int(b[n]) | int(b[n+1])<<8)
	}
	for _, bit := range []byte{0x08, 0x10} {
		if flg&bit == 0 {
			continue
		}
		if n > len(b) {
			return 0, io.ErrUnexpectedEOF
		}
		i := bytes.IndexByte(b[n:], 0)
		if i < 0 {
			return 0, io.ErrUnexpectedEOF
		}
		n += i + 1
	}
	if flg&0x02 != 0 {
		n += 2
	}
	if n > len(b) {
		return 0, io.ErrUnexpectedEOF
	}
	return n, nil
}
