package verify

import (
	"bytes"
	"errors"
	"io"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

func TestReader(t *testing.T) {
	content := []byte("the bytes a descriptor names")
	h, size, _ := v1.SHA256(bytes.NewReader(content))
	want := v1.Descriptor{Digest: h, Size: size}
	other := append([]byte(nil), content...)
	other[3] ^= 1
	tests := []struct {
		name   string
		read   []byte
		ok     bool
		passed int // bytes passed on before the error, at most
	}{
		{"exact", content, true, len(content)},
		{"short", content[:10], false, 10},
		{"long", append(append([]byte(nil), content...), "more"...), false, len(content)},
		{"other bytes", other, false, len(content)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var seen int64
			r, err := NewReader(bytes.NewReader(tc.read), want, "test", func(n int64) { seen = n })
			if err != nil {
				t.Fatal(err)
			}
			got, err := io.ReadAll(r)
			var mm *MismatchError
			if tc.ok != (err == nil) || (!tc.ok && (!errors.As(err, &mm) || !errors.Is(err, ErrMismatch))) {
				t.Errorf("reading = %v, want ok %v or a *MismatchError", err, tc.ok)
			}
			if len(got) > tc.passed {
				t.Errorf("passed on %d bytes, more than the %d promised", len(got), tc.passed)
			}
			if tc.ok && seen != size {
				t.Errorf("reported %d bytes, want %d", seen, size)
			}
			if berr := Bytes(tc.read, want, "test"); (berr == nil) != tc.ok {
				t.Errorf("Bytes() = %v, want ok %v", berr, tc.ok)
			}
		})
	}
	if _, err := NewReader(bytes.NewReader(content), v1.Descriptor{Digest: v1.Hash{Algorithm: "sha512", Hex: "00"}}, "test", nil); err == nil {
		t.Error("NewReader accepted a sha512 digest")
	}
}
