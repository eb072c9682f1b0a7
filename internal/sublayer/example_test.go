package sublayer_test

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"fmt"
	"os"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/imokit/imo/internal/sublayer"
)

// layer makes a gzip layer blob as Docker does, with one file whose
// contents are given and the modification time mt.
func layer(contents string, mt time.Time) []byte {
	var tb bytes.Buffer
	tw := tar.NewWriter(&tb)
	for i := 0; i < 20; i++ {
		var data []byte
		for j := 0; j < 100; j++ {
			data = fmt.Appendf(data, "%s %x\n", contents, sha256.Sum256(fmt.Appendf(nil, "%d/%d", i, j)))
		}
		tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: fmt.Sprintf("etc/f%d", i), Mode: 0o644, Size: int64(len(data)), ModTime: mt})
		tw.Write([]byte(data))
	}
	tw.Close()
	var zb bytes.Buffer
	zw := gzip.NewWriter(&zb)
	zw.Write(tb.Bytes())
	zw.Close()
	return zb.Bytes()
}

func Example() {
	ctx := context.Background()
	baseBlob := layer("the same content ", time.Unix(1e9, 0))
	baseDigest, _, _ := v1.SHA256(bytes.NewReader(baseBlob))
	final := layer("the same content ", time.Unix(2e9, 0)) // rebuilt: new mtimes
	digest, _, _ := v1.SHA256(bytes.NewReader(final))

	// The side with both images makes the delta and proves it.
	pull, _ := sublayer.NewBase(os.TempDir())
	defer pull.Close()
	pull.AddLayer(ctx, bytes.NewReader(baseBlob), baseDigest.String())
	var delta bytes.Buffer
	if _, err := sublayer.Prepare(ctx, pull, bytes.NewReader(final), int64(len(final)), digest, &delta); err != nil {
		fmt.Println(err) // ship the whole blob instead
		return
	}

	// The other side learns which base layers it needs, then rebuilds.
	h, _ := sublayer.ReadHeader(bytes.NewReader(delta.Bytes()))
	push, _ := sublayer.NewBase(os.TempDir())
	defer push.Close()
	for _, id := range h.Bases {
		if id == baseDigest.String() {
			push.AddLayer(ctx, bytes.NewReader(baseBlob), id)
		}
	}
	var blob bytes.Buffer
	if _, err := sublayer.Rebuild(ctx, push, bytes.NewReader(delta.Bytes()), &blob); err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println("recipe:", h.Recipe.Encoder, h.Recipe.Level)
	fmt.Println("same blob:", bytes.Equal(blob.Bytes(), final))
	fmt.Println("delta smaller than a tenth:", delta.Len()*10 < len(final))
	// Output:
	// recipe: gzip 6
	// same blob: true
	// delta smaller than a tenth: true
}
