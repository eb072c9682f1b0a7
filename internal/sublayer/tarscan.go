package sublayer

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"path"
	"strconv"
	"strings"
)

const (
	blockSize = 512
	// maxMetaSize caps the PAX records and GNU long names that are parsed;
	// larger ones pass through as raw bytes.
	maxMetaSize = 1 << 20
)

// tarVisitor receives a tar stream split in two kinds of pieces that add up
// to every byte of it, in order: raw bytes (headers, extended headers,
// padding, trailer, anything not understood) and the contents of regular
// files.
type tarVisitor interface {
	raw(p []byte) error
	// content must read exactly size bytes from r.
	content(name string, size int64, r io.Reader) error
}

// scanTar splits r into raw bytes and regular file contents. It never
// loses a byte: input that is not a valid tar header is passed on as raw.
// A regular file whose contents are cut short is an error.
func scanTar(r io.Reader, v tarVisitor) error {
	br := bufio.NewReaderSize(r, 256<<10)
	block := make([]byte, blockSize)
	var (
		paxSize   int64 = -1
		paxPath   string
		paxSparse bool
		longName  string
	)
	reset := func() {
		paxSize, paxPath, paxSparse, longName = -1, "", false, ""
	}
	for {
		n, err := io.ReadFull(br, block)
		if n < blockSize {
			if n > 0 {
				if err := v.raw(block[:n]); err != nil {
					return err
				}
			}
			if err == io.EOF || err == io.ErrUnexpectedEOF {
				return nil
			}
			return err
		}
		if !validHeader(block) {
			reset()
			if err := v.raw(block); err != nil {
				return err
			}
			continue
		}
		size, ok := parseNumeric(block[124:136])
		if !ok {
			reset()
			if err := v.raw(block); err != nil {
				return err
			}
			continue
		}
		typ := block[156]
		name := headerName(block)
		if err := v.raw(block); err != nil {
			return err
		}
		switch typ {
		case 'x', 'L':
			if size <= maxMetaSize {
				data := make([]byte, size)
				if n, err := io.ReadFull(br, data); err != nil {
					if err := v.raw(data[:n]); err != nil {
						return err
					}
					return nil
				}
				if err := v.raw(data); err != nil {
					return err
				}
				if typ == 'x' {
					paxSize, paxPath, paxSparse = parsePAX(data)
				} else {
					longName = string(bytes.TrimRight(data, "\x00"))
				}
				if err := rawCopy(br, v, padding(size)); err != nil {
					return eofOK(err)
				}
				continue
			}
			if err := rawCopy(br, v, size+padding(size)); err != nil {
				return eofOK(err)
			}
			continue
		case 'g', 'K':
			if err := rawCopy(br, v, size+padding(size)); err != nil {
				return eofOK(err)
			}
			continue
		case 'S':
			// Old GNU sparse: extension blocks follow while isextended is set.
			ext := block[482] != 0
			for ext {
				if _, err := io.ReadFull(br, block); err != nil {
					return eofOK(err)
				}
				if err := v.raw(block); err != nil {
					return err
				}
				ext = block[504] != 0
			}
			reset()
			if err := rawCopy(br, v, size+padding(size)); err != nil {
				return eofOK(err)
			}
			continue
		}
		if paxSize >= 0 {
			size = paxSize
		}
		if paxPath != "" {
			name = paxPath
		} else if longName != "" {
			name = longName
		}
		sparse := paxSparse
		reset()
		if (typ == '0' || typ == 0 || typ == '7') && !sparse && size > 0 {
			lr := &io.LimitedReader{R: br, N: size}
			if err := v.content(cleanPath(name), size, lr); err != nil {
				return err
			}
			if lr.N != 0 {
				return fmt.Errorf("reading %s: %w", name, io.ErrUnexpectedEOF)
			}
			if err := rawCopy(br, v, padding(size)); err != nil {
				return eofOK(err)
			}
			continue
		}
		if typ >= '1' && typ <= '6' {
			// Links, devices, directories and FIFOs have no data, whatever
			// their size field says (as archive/tar reads them).
			continue
		}
		if err := rawCopy(br, v, size+padding(size)); err != nil {
			return eofOK(err)
		}
	}
}

// errShort marks raw data cut short by the end of the stream; what there
// was has been passed on, so the scan ends cleanly.
var errShort = errors.New("short raw data")

func eofOK(err error) error {
	if errors.Is(err, errShort) || err == io.EOF || err == io.ErrUnexpectedEOF {
		return nil
	}
	return err
}

// rawCopy passes n bytes of br to v as raw.
func rawCopy(br *bufio.Reader, v tarVisitor, n int64) error {
	for n > 0 {
		k := int(min(n, int64(br.Size())))
		p, err := br.Peek(k)
		if len(p) > 0 {
			if err := v.raw(p); err != nil {
				return err
			}
			_, _ = br.Discard(len(p))
			n -= int64(len(p))
		}
		if err != nil {
			if err == io.EOF || err == io.ErrUnexpectedEOF {
				return errShort
			}
			if err == bufio.ErrBufferFull {
				continue
			}
			return err
		}
	}
	return nil
}

func padding(size int64) int64 {
	return (blockSize - size%blockSize) % blockSize
}

// validHeader checks a header block's checksum. An all-zero block fails.
func validHeader(b []byte) bool {
	want, ok := parseNumeric(b[148:156])
	if !ok {
		return false
	}
	var unsigned, signed int64
	for i, c := range b {
		if i >= 148 && i < 156 {
			c = ' '
		}
		unsigned += int64(c)
		signed += int64(int8(c))
	}
	if unsigned == 8*' ' {
		return false // all zero but the checksum field
	}
	return want == unsigned || want == signed
}

// parseNumeric parses an octal or base-256 tar number field.
func parseNumeric(b []byte) (int64, bool) {
	if len(b) > 0 && b[0]&0x80 != 0 {
		if b[0] != 0x80 { // negative or too large
			return 0, false
		}
		var x int64
		for _, c := range b[1:] {
			if x > (1<<62)>>8 {
				return 0, false
			}
			x = x<<8 | int64(c)
		}
		return x, x < 1<<50
	}
	s := strings.Trim(string(b), " \x00")
	if s == "" {
		return 0, true
	}
	x, err := strconv.ParseInt(s, 8, 64)
	if err != nil || x < 0 || x >= 1<<50 {
		return 0, false
	}
	return x, true
}

func cString(b []byte) string {
	if i := bytes.IndexByte(b, 0); i >= 0 {
		b = b[:i]
	}
	return string(b)
}

// headerName is the name in a ustar or GNU header block.
func headerName(b []byte) string {
	name := cString(b[0:100])
	if string(b[257:263]) == "ustar\x00" {
		if prefix := cString(b[345:500]); prefix != "" {
			name = prefix + "/" + name
		}
	}
	return name
}

// parsePAX extracts what matters here from PAX records.
func parsePAX(data []byte) (size int64, name string, sparse bool) {
	size = -1
	for len(data) > 0 {
		sp := bytes.IndexByte(data, ' ')
		if sp <= 0 {
			return
		}
		n, err := strconv.Atoi(string(data[:sp]))
		if err != nil || n <= sp+1 || n > len(data) {
			return
		}
		rec := data[sp+1 : n]
		data = data[n:]
		rec = bytes.TrimSuffix(rec, []byte("\n"))
		k, val, ok := bytes.Cut(rec, []byte("="))
		if !ok {
			continue
		}
		switch key := string(k); {
		case key == "size":
			if x, err := strconv.ParseInt(string(val), 10, 64); err == nil && x >= 0 && x < 1<<50 {
				size = x
			}
		case key == "path":
			name = string(val)
		case strings.HasPrefix(key, "GNU.sparse."):
			sparse = true
		}
	}
	return
}

// cleanPath normalizes a tar entry name for matching across layers.
func cleanPath(name string) string {
	name = strings.TrimLeft(name, "/")
	name = strings.TrimPrefix(path.Clean("/"+name), "/")
	return name
}
