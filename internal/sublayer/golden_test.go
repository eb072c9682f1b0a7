package sublayer

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"runtime/debug"
	"strings"
	"testing"
)

var printGolden = flag.Bool("print-golden", false, "print the golden vectors this build computes, as Go source")

// allGoldenVectors lists every vector that must exist, without values.
func allGoldenVectors() []goldenVector {
	var vs []goldenVector
	for l := 1; l <= 9; l++ {
		vs = append(vs, goldenVector{encoder: EncoderGzip, level: l})
	}
	for l := 1; l <= 9; l++ {
		vs = append(vs, goldenVector{encoder: EncoderKlauspostGzip, level: l})
	}
	for l := 1; l <= 9; l++ {
		vs = append(vs, goldenVector{encoder: EncoderPgzip, level: l})
	}
	for l := 1; l <= 4; l++ {
		vs = append(vs, goldenVector{encoder: EncoderZstd, level: l})
	}
	for _, v := range []goldenVector{
		{encoder: EncoderGzip, level: 1}, {encoder: EncoderGzip, level: 6}, {encoder: EncoderGzip, level: 9},
		{encoder: EncoderKlauspostGzip, level: 5}, {encoder: EncoderPgzip, level: 5}, {encoder: EncoderZstd, level: 2},
	} {
		v.input = 1
		vs = append(vs, v)
	}
	return vs
}

func TestGoldenVectors(t *testing.T) {
	inputs := [][]byte{goldenInput(goldenInputs[0].size, goldenInputs[0].seed), goldenInput(goldenInputs[1].size, goldenInputs[1].seed)}
	if *printGolden {
		var b strings.Builder
		for _, v := range allGoldenVectors() {
			got, err := v.compute(inputs)
			if err != nil {
				t.Fatal(err)
			}
			fmt.Fprintf(&b, "\t{%q, %d, %d, %q},\n", v.encoder, v.level, v.input, got)
		}
		fmt.Fprint(os.Stdout, b.String())
	}
	pinned := map[goldenVector]string{}
	for _, v := range goldenVectors {
		s := v.sha256
		v.sha256 = ""
		pinned[v] = s
	}
	for _, v := range allGoldenVectors() {
		t.Run(fmt.Sprintf("%s/%d/input%d", v.encoder, v.level, v.input), func(t *testing.T) {
			if raceEnabled && v.input > 0 {
				t.Skip("large input skipped under the race detector; TestCheckEncoders covers it")
			}
			want, ok := pinned[v]
			if !ok {
				t.Fatalf("no golden vector pinned")
			}
			got, err := v.compute(inputs)
			if err != nil {
				t.Fatal(err)
			}
			if got != want {
				t.Errorf("sha256 of %s level %d output = %s, want %s: the encoder's output changed", v.encoder, v.level, got, want)
			}
		})
	}
	if len(pinned) != len(allGoldenVectors()) {
		t.Errorf("%d golden vectors pinned, want %d", len(pinned), len(allGoldenVectors()))
	}
}

func TestCheckEncoders(t *testing.T) {
	if err := CheckEncoders(); err != nil {
		t.Fatalf("CheckEncoders() = %v", err)
	}
	// A vector that no longer matches is reported by encoder.
	altered := []goldenVector{goldenVectors[0], goldenVectors[len(goldenVectors)-1]}
	altered[0].sha256 = strings.Repeat("0", 64)
	bad, err := checkGolden(altered)
	if err != nil {
		t.Fatal(err)
	}
	if len(bad) != 1 || len(bad[altered[0].encoder]) != 1 {
		t.Errorf("checkGolden(altered) = %v, want one vector of %s", bad, altered[0].encoder)
	}
}

// TestEncoderVersions checks that the versions recorded in recipes are the
// versions the module requires. Test binaries carry no dependency build
// info, so go.mod is read; when build info has dependencies it is checked
// too.
func TestEncoderVersions(t *testing.T) {
	want := map[string]string{compressModule: compressVersion, pgzipModule: pgzipVersion}
	data, err := os.ReadFile("../../go.mod")
	if err != nil {
		t.Fatal(err)
	}
	mod := map[string]string{}
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) >= 2 && strings.HasPrefix(f[1], "v") {
			mod[f[0]] = f[1]
		}
		for m := range want {
			if strings.Contains(line, "=>") && strings.Contains(line, m) {
				t.Errorf("go.mod replaces an encoder module: %s", line)
			}
		}
	}
	for m, v := range want {
		if mod[m] != v {
			t.Errorf("go.mod requires %s %q, recipes record %q", m, mod[m], v)
		}
	}
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, d := range bi.Deps {
			if v, ok := want[d.Path]; ok && (d.Version != v || d.Replace != nil) {
				t.Errorf("this build has %s %s (replaced: %v), recipes record %s", d.Path, d.Version, d.Replace != nil, v)
			}
		}
	}
}

// TestCheckRecipeRefuses checks that a recipe is refused when its own
// encoder's vectors differ, and only then.
func TestCheckRecipeRefuses(t *testing.T) {
	if err := CheckEncoders(); err != nil {
		t.Fatal(err)
	}
	checkBad[EncoderZstd] = []string{"zstd (simulated change)"}
	defer delete(checkBad, EncoderZstd)
	zr := &Recipe{Encoder: EncoderZstd, Version: encoderVersion(EncoderZstd), Level: 2}
	if err := CheckRecipe(zr); !errors.Is(err, ErrEncoderMismatch) || !strings.Contains(err.Error(), "zstd") {
		t.Errorf("CheckRecipe(zstd) = %v, want ErrEncoderMismatch naming zstd", err)
	}
	if err := CheckEncoders(); !errors.Is(err, ErrEncoderMismatch) {
		t.Errorf("CheckEncoders() = %v, want ErrEncoderMismatch", err)
	}
	gr := &Recipe{Encoder: EncoderGzip, Version: encoderVersion(EncoderGzip), Level: 6}
	if err := CheckRecipe(gr); err != nil {
		t.Errorf("CheckRecipe(gzip) = %v, want nil", err)
	}
}
