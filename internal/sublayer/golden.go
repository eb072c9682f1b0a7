package sublayer

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"
	"sync"
)

// goldenVector is one pinned encoder output: the sha256 of input
// compressed with recipe.
type goldenVector struct {
	encoder string
	level   int
	input   int // index into goldenInputs
	sha256  string
}

// goldenInputs are the deterministic inputs of the golden vectors: a small
// one for every level and one spanning several pgzip blocks and zstd
// blocks for the levels real producers use.
var goldenInputs = []struct {
	size int
	seed uint64
}{
	{96 << 10, 1},
	{1<<20 + 300007, 2},
}

// goldenInput returns deterministic data that compresses like real files:
// mostly words from a small vocabulary with some runs of noise.
func goldenInput(size int, seed uint64) []byte {
	words := strings.Fields(`the of and to in is for that layer image container file
		registry digest manifest blob tar gzip zstd config index build push pull
		/usr/lib /usr/bin /etc/passwd libc.so.6 0x7fff 4096 1970-01-01 sha256:
		{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "size":`)
	x := seed*0x9e3779b97f4a7c15 + 1
	next := func() uint64 { // xorshift64*
		x ^= x >> 12
		x ^= x << 25
		x ^= x >> 27
		return x * 0x2545f4914f6cdd1d
	}
	out := make([]byte, 0, size+64)
	for len(out) < size {
		r := next()
		switch {
		case r%16 == 0: // a run of noise
			n := int(r>>8)%200 + 1
			for i := 0; i < n; i++ {
				out = append(out, byte(next()>>32))
			}
		case r%5 == 0:
			out = append(out, '\n')
		default:
			out = append(out, words[(r>>16)%uint64(len(words))]...)
			out = append(out, ' ')
		}
	}
	return out[:size]
}

// goldenRecipe is the recipe a vector is computed with.
func (v goldenVector) recipe() *Recipe {
	r := &Recipe{Encoder: v.encoder, Version: encoderVersion(v.encoder), Level: v.level}
	if v.encoder == EncoderPgzip {
		r.BlockSize = PgzipBlockSize
	}
	return r
}

// compute compresses the vector's input and returns the sha256 of the output.
func (v goldenVector) compute(inputs [][]byte) (string, error) {
	h := sha256.New()
	zw, err := v.recipe().Compress(h)
	if err != nil {
		return "", err
	}
	in := inputs[v.input]
	// Vary write sizes: they must not change the output.
	for i, k := 0, 1; len(in) > 0; i++ {
		k = min(len(in), 787+i*40503%300000)
		if _, err := zw.Write(in[:k]); err != nil {
			return "", err
		}
		in = in[k:]
	}
	if err := zw.Close(); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// goldenEncoders are the encoders that golden vectors pin.
var goldenEncoders = []string{EncoderGzip, EncoderKlauspostGzip, EncoderPgzip, EncoderZstd}

var (
	checkMu   sync.Mutex
	checkDone = map[string]bool{}     // encoders whose vectors were computed
	checkErr  error                   // the first error computing any vector
	checkBad  = map[string][]string{} // encoder → vectors whose output differs
)

// CheckEncoders compresses the built-in golden vectors with every encoder
// and level this package supports and compares the output's sha256 with the
// pinned values. The error wraps [ErrEncoderMismatch] and names each encoder
// whose output differs: a delta whose recipe uses such an encoder must not
// be used. The vectors are computed once per process.
func CheckEncoders() error {
	return checkEncoders("")
}

// checkEncoders is CheckEncoders for one encoder, or for all if encoder is
// empty. Each encoder's vectors are computed the first time they are
// needed, so that a rebuild pays only for (and holds in memory only) the
// encoder it uses.
func checkEncoders(encoder string) error {
	checkMu.Lock()
	defer checkMu.Unlock()
	var bad []string
	for _, e := range goldenEncoders {
		if encoder != "" && encoder != e {
			continue
		}
		if !checkDone[e] && checkErr == nil {
			var vs []goldenVector
			for _, v := range goldenVectors {
				if v.encoder == e {
					vs = append(vs, v)
				}
			}
			var m map[string][]string
			if m, checkErr = checkGolden(vs); checkErr == nil {
				checkDone[e] = true
				if len(m[e]) > 0 {
					checkBad[e] = m[e]
				}
			}
		}
		if checkErr != nil {
			return checkErr
		}
		bad = append(bad, checkBad[e]...)
	}
	if len(bad) > 0 {
		return fmt.Errorf("%w: %s", ErrEncoderMismatch, strings.Join(bad, ", "))
	}
	return nil
}

// checkGolden computes vectors and returns, per encoder, those that differ.
func checkGolden(vectors []goldenVector) (map[string][]string, error) {
	inputs := make([][]byte, len(goldenInputs))
	for i, in := range goldenInputs {
		inputs[i] = goldenInput(in.size, in.seed)
	}
	bad := map[string][]string{}
	for _, v := range vectors {
		got, err := v.compute(inputs)
		if err != nil {
			return nil, fmt.Errorf("golden vector %s level %d: %w", v.encoder, v.level, err)
		}
		if got != v.sha256 {
			bad[v.encoder] = append(bad[v.encoder], fmt.Sprintf("%s %s level %d (input %d)", v.encoder, encoderVersion(v.encoder), v.level, v.input))
		}
	}
	return bad, nil
}

// goldenVectors were computed with Go 1.26.8, klauspost/compress v1.19.2 and
// pgzip v1.2.6 (see TestGoldenVectors).
var goldenVectors = []goldenVector{
	{"gzip", 1, 0, "8982fdc7d8112775e45f39611c4914906861e4e035bfda42fef9ebdacba5e097"},
	{"gzip", 2, 0, "96474dc08096d88755b6dbc20675021d5a9015a50e8298c8c2538f47354ef56e"},
	{"gzip", 3, 0, "5b24246739114bc29d9ff1f971c990002a3a7ddcac16ef3f114a4573482b295d"},
	{"gzip", 4, 0, "63eca96deeff5b9fbad8888290a1d99884569d65fc4333a7afd2e50c4e801ff2"},
	{"gzip", 5, 0, "e54fd78034ea3b53b838a3fdc27732815d3c19571df8f9dcbbefd2ec59b7edc1"},
	{"gzip", 6, 0, "293015515e7329b32bebc252149f07026b40466eebc2ee7fbc3fc7a2728e8f56"},
	{"gzip", 7, 0, "b3a06b6f4e0d98957b480be76a62b15d3ac5c436a293062c6ae2a14c73e64086"},
	{"gzip", 8, 0, "cdd0b4a33d1e1d09ec8c059b107f3067f8aeead6f99afc370b551e69a7469052"},
	{"gzip", 9, 0, "000ca144f689ee74876798060ecdb8ea3a45aab92a3239cb1b6762195ca77715"},
	{"klauspost-gzip", 1, 0, "8ad4378a667823facef0825a348ad80e0e2a6e7cf5647255fa0799d1d2856fe2"},
	{"klauspost-gzip", 2, 0, "815fe8cafcd2d9c5643a67c8f7c1a2aed540f196badd7649dd18ab6a32d2b048"},
	{"klauspost-gzip", 3, 0, "821553cc7e5c88fd4b185922588b1d5548e7756b01f087b20c0e12a3bf636f58"},
	{"klauspost-gzip", 4, 0, "b147e288cd311b7873ac7b2fae4bab59f5499e1b2d8eae9dffc41a10a37ef34e"},
	{"klauspost-gzip", 5, 0, "8ce3f32b707aed1b86b1e5209f2433744af4334b4866710a0e4b2fef59d25902"},
	{"klauspost-gzip", 6, 0, "3210f141422630d90477ee9ddb7fab50eb2927d63d94c5249ffdf704c6b5f416"},
	{"klauspost-gzip", 7, 0, "cc9a511a0be334960c1c889845d8d87cb8cef35cd138e1ec91a28acd5cfd6d49"},
	{"klauspost-gzip", 8, 0, "5d91c756de668da922dec7f80541a189a05f882e7e85945cfd2600380ea90b95"},
	{"klauspost-gzip", 9, 0, "0821b263f1ed99bc3434124785e579e69130b6d8d5dd358d1432b0e7b2078546"},
	{"pgzip", 1, 0, "093152b41e5fa8deabd93443546b60ea144cd988e48c3ec80d36aa67800a8e83"},
	{"pgzip", 2, 0, "7557361f5a6cda490d9498bf57cf6f10b27382e47f39273c15b87fc99e987074"},
	{"pgzip", 3, 0, "5342a987400c72b714943254619e535dbca9c46c9172b6eb060b1ca6009aaf8b"},
	{"pgzip", 4, 0, "9f11b31eb4678b178e8b8c1767148d7e86e08afd4c83e90222ead57a50ddfb6c"},
	{"pgzip", 5, 0, "3005f78c06a95a89a651dad630fdbfec59d770d81f1522d86859f99ab758a0d0"},
	{"pgzip", 6, 0, "88ee828a17987747d217a87604bf08e4b9a36f2dad94bfa9d79c7f126822c022"},
	{"pgzip", 7, 0, "c534015268c18fcb0f88825a994ef05fcd1a84d804efc891d0c5577c7f11499d"},
	{"pgzip", 8, 0, "903bca462306f3d1f51b22c12668ddd9367bf2e9124b4cf5551ba4963ae95b3b"},
	{"pgzip", 9, 0, "71d9ac2cb9755e1ef1fc7e2855df9d04488f466e6b85d73080f792d9c414e1a8"},
	{"zstd", 1, 0, "d3adc46bd724daafd968a620e96153a93d6bf4615b50fc8975f5fa0212adaac9"},
	{"zstd", 2, 0, "f8295df1ad84e410b67902a7a32fc17de4f41338cf4369e826e250a5df12908a"},
	{"zstd", 3, 0, "54c407be9b9a64b68257b8e4ac8c8a5d6dac3bb9dd91e98288082554ef07e433"},
	{"zstd", 4, 0, "4199c4faad163b96866331c1fa47ea282492dd0a2b90916ffba7d9a17156f718"},
	{"gzip", 1, 1, "17fbf96b2e02735e6cea90110da51a24754c551036d53de88207425dc781f4e3"},
	{"gzip", 6, 1, "865250abf6c8d7e0c8c16652c88e414a660faece7aa5a5308cec221c7a08bb78"},
	{"gzip", 9, 1, "25ef6b502876974da0a2e0e8edb72c97d36a68cfa184547f709277182af69ea0"},
	{"klauspost-gzip", 5, 1, "56d9f991908574971291eced5cf6725aff2493acf88b11e25969b6ef290642ab"},
	{"pgzip", 5, 1, "91190b3b6a930e9de5457c9b7a8ee14005143ab86afb32b0d1dfd3c1db72b454"},
	{"zstd", 2, 1, "f18d8ce48b5dd2dfe7568631d38b05aecdab9b5ebe0674249157e9d33d2e5fb4"},
}
