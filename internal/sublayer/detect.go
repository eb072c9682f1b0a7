package sublayer

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"sync"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/klauspost/compress/zstd"
)

// probeSizes are how much uncompressed data each stage of the prefix probe
// compresses with each remaining candidate. The first stage tells levels
// apart cheaply; the last spans several pgzip blocks, so that pgzip and
// klauspost gzip at the same level are told apart.
var probeSizes = []int{256 << 10, 4 << 20}

// probeAll probes every candidate with prefix and keeps, in order, those
// whose output agrees with the blob at least half as long as the best one.
func probeAll(ctx context.Context, cands []Recipe, prefix []byte, blob io.ReaderAt, size int64) ([]Recipe, error) {
	matched := make([]int64, len(cands))
	var best int64
	for i, c := range cands {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		m, err := probe(&c, prefix, blob, size)
		if err != nil {
			return nil, err
		}
		matched[i] = m
		best = max(best, m)
	}
	var out []Recipe
	for i, c := range cands {
		if best > 0 && matched[i] >= best/2 {
			out = append(out, c)
		}
	}
	return out, nil
}

// probeStages runs the prefix probe's stages until one candidate is left
// or the prefix is the whole layer.
func probeStages(ctx context.Context, cands []Recipe, blob io.ReaderAt, size int64) ([]Recipe, error) {
	rc, err := decompress(io.NewSectionReader(blob, 0, size))
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrUnsupportedEncoder, err)
	}
	prefix := make([]byte, probeSizes[len(probeSizes)-1]+1)
	n, err := io.ReadFull(rc, prefix)
	rc.Close()
	if err != nil && err != io.EOF && err != io.ErrUnexpectedEOF {
		return nil, fmt.Errorf("%w: decompressing: %v", ErrUnsupportedEncoder, err)
	}
	prefix = prefix[:n]
	for _, n := range probeSizes {
		if len(cands) <= 1 || len(prefix) <= n {
			// The full round trip decides.
			break
		}
		if cands, err = probeAll(ctx, cands, prefix[:n], blob, size); err != nil {
			return nil, err
		}
	}
	return cands, nil
}

// klauspostMTIME is the MTIME klauspost gzip and pgzip write when none is
// set: uint32(time.Time{}.Unix()), little-endian.
var klauspostMTIME = []byte{0x00, 0x09, 0x6e, 0x88}

// DetectRecipe finds the [Recipe] that turns the uncompressed content of
// blob back into blob, whose digest must be want. The gzip header picks the
// family of encoders; a prefix probe compresses the first few MiB with each
// candidate and keeps those whose output follows the blob longest; a full
// round trip with each survivor decides. It returns an error wrapping
// [ErrUnsupportedEncoder] when no candidate reproduces the blob.
func DetectRecipe(ctx context.Context, blob io.ReaderAt, size int64, want v1.Hash) (*Recipe, error) {
	survivors, err := recipeCandidates(ctx, blob, size)
	if err != nil {
		return nil, err
	}
	for _, c := range survivors {
		ok, err := roundTrip(ctx, &c, blob, size, want)
		if err != nil {
			return nil, err
		}
		if ok {
			return &c, nil
		}
	}
	return nil, fmt.Errorf("%w: no known encoder reproduces %s", ErrUnsupportedEncoder, want)
}

// candidates lists the recipes worth trying for a blob that starts with
// head, most likely first.
func candidates(head []byte) ([]Recipe, error) {
	switch {
	case bytes.HasPrefix(head, gzipMagic):
		n, err := gzipHeaderLen(head)
		if err != nil || n != 10 || head[3] != 0 || head[9] != 255 {
			return nil, fmt.Errorf("%w: gzip header % x is not one of a known encoder", ErrUnsupportedEncoder, head[:min(len(head), 10)])
		}
		hdr := bytes.Clone(head[:10])
		var levels []int
		switch head[8] {
		case 4:
			levels = []int{1}
		case 2:
			levels = []int{9}
		case 0:
			levels = []int{6, 5, 4, 3, 2, 7, 8}
		default:
			return nil, fmt.Errorf("%w: gzip XFL %d", ErrUnsupportedEncoder, head[8])
		}
		var out []Recipe
		switch mtime := head[4:8]; {
		case bytes.Equal(mtime, []byte{0, 0, 0, 0}):
			for _, l := range levels {
				out = append(out, Recipe{Encoder: EncoderGzip, Version: encoderVersion(EncoderGzip), Level: l, Header: hdr})
			}
		case bytes.Equal(mtime, klauspostMTIME):
			if head[8] == 0 {
				levels = []int{5, 6, 4, 3, 2, 7, 8}
			}
			for _, l := range levels {
				out = append(out,
					Recipe{Encoder: EncoderPgzip, Version: encoderVersion(EncoderPgzip), Level: l, BlockSize: PgzipBlockSize, Header: hdr},
					Recipe{Encoder: EncoderKlauspostGzip, Version: encoderVersion(EncoderKlauspostGzip), Level: l, Header: hdr})
			}
		default:
			return nil, fmt.Errorf("%w: gzip MTIME % x is not one of a known encoder", ErrUnsupportedEncoder, mtime)
		}
		return out, nil
	case bytes.HasPrefix(head, zstdMagic):
		var out []Recipe
		for _, l := range []zstd.EncoderLevel{zstd.SpeedDefault, zstd.SpeedFastest, zstd.SpeedBetterCompression, zstd.SpeedBestCompression} {
			out = append(out, Recipe{Encoder: EncoderZstd, Version: encoderVersion(EncoderZstd), Level: int(l)})
		}
		return out, nil
	case len(head) >= blockSize && validHeader(head[:blockSize]):
		return []Recipe{{Encoder: EncoderNone}}, nil
	}
	return nil, fmt.Errorf("%w: blob is neither gzip, zstd nor tar", ErrUnsupportedEncoder)
}

// probe compresses prefix with r and returns how many leading bytes of the
// output equal the blob's. The encoder is closed, so its last bytes differ
// from a blob that goes on; only the length of the agreement counts.
func probe(r *Recipe, prefix []byte, blob io.ReaderAt, size int64) (int64, error) {
	cw := &compareWriter{blob: blob, size: size}
	zw, err := r.Compress(cw)
	if err != nil {
		return 0, err
	}
	for p := prefix; len(p) > 0 && !cw.differs(); {
		k := min(len(p), 256<<10)
		if _, err := zw.Write(p[:k]); err != nil {
			zw.Close()
			return 0, err
		}
		p = p[k:]
	}
	if err := zw.Close(); err != nil {
		return 0, err
	}
	return cw.matched(), nil
}

// roundTrip decompresses blob, compresses it with r and reports whether the
// result is blob, byte for byte and by digest.
func roundTrip(ctx context.Context, r *Recipe, blob io.ReaderAt, size int64, want v1.Hash) (bool, error) {
	rc, err := decompress(io.NewSectionReader(blob, 0, size))
	if err != nil {
		return false, err
	}
	defer rc.Close()
	cw := &compareWriter{blob: blob, size: size, h: sha256.New()}
	zw, err := r.Compress(cw)
	if err != nil {
		return false, err
	}
	_, err = io.CopyBuffer(zw, &abortReader{ctx: ctx, r: rc, cw: cw}, make([]byte, 256<<10))
	cerr := zw.Close()
	if errors.Is(err, errAbort) {
		return false, nil
	}
	if err != nil {
		if ctx.Err() != nil {
			return false, ctx.Err()
		}
		// The blob does not decompress: no recipe can reproduce it.
		return false, nil
	}
	if cerr != nil {
		return false, cerr
	}
	if cw.differs() || cw.matched() != size {
		return false, nil
	}
	return want.Algorithm == "sha256" && hex.EncodeToString(cw.h.Sum(nil)) == want.Hex, nil
}

var errAbort = errors.New("output differs from blob")

// abortReader stops a copy once the output differs or ctx is done.
type abortReader struct {
	ctx context.Context
	r   io.Reader
	cw  *compareWriter
}

func (a *abortReader) Read(p []byte) (int, error) {
	if err := a.ctx.Err(); err != nil {
		return 0, err
	}
	if a.cw.differs() {
		return 0, errAbort
	}
	return a.r.Read(p)
}

// compareWriter compares what is written to it with the blob at the same
// offset. It never fails a write, so that encoders with goroutines (pgzip)
// shut down cleanly; callers poll differs. It is safe for concurrent use.
type compareWriter struct {
	blob io.ReaderAt
	size int64
	h    hash.Hash

	// onDiff, if set, is called once when the output first differs.
	onDiff func()

	mu   sync.Mutex
	off  int64
	diff bool
	buf  []byte
}

func (c *compareWriter) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.diff {
		return len(p), nil
	}
	if c.h != nil {
		c.h.Write(p)
	}
	n := min(int64(len(p)), c.size-c.off)
	if cap(c.buf) < int(n) {
		c.buf = make([]byte, n)
	}
	b := c.buf[:n]
	k, err := c.blob.ReadAt(b, c.off)
	if err != nil && err != io.EOF {
		k = 0 // cannot compare: count it as a difference
	}
	b = b[:k]
	i := 0
	for i < len(b) && b[i] == p[i] {
		i++
	}
	c.off += int64(i)
	if i < len(p) {
		c.diff = true
		if c.onDiff != nil {
			c.onDiff()
		}
	}
	return len(p), nil
}

func (c *compareWriter) differs() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.diff
}

func (c *compareWriter) matched() int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.off
}
