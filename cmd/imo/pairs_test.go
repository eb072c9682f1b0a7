package main

import (
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/imokit/imo"
)

func TestParsePairs(t *testing.T) {
	tests := []struct {
		name, in string
		want     imo.Bundle
		err      string
	}{
		{"text", "# release\n\nreg/app:v1 reg/app:v2\nscratch reg/db:v9   # new\n", imo.Bundle{{Base: "reg/app:v1", Final: "reg/app:v2"}, {Base: "scratch", Final: "reg/db:v9"}}, ""},
		{"json", `[{"base":"reg/app:v1","final":"reg/app:v2"},{"base":"scratch","final":"reg/db:v9"}]`, imo.Bundle{{Base: "reg/app:v1", Final: "reg/app:v2"}, {Base: "scratch", Final: "reg/db:v9"}}, ""},
		{"crlf", "a:1 a:2\r\n", imo.Bundle{{Base: "a:1", Final: "a:2"}}, ""},
		{"one field", "reg/app:v2\n", nil, "line 1"},
		{"three fields", "a b c\n", nil, "line 1"},
		{"empty", "# nothing\n", nil, "no pair"},
		{"final listed twice", "a:1 b:2\nscratch b:2\n", nil, "listed twice"},
		{"final is scratch", "a:1 scratch\n", nil, "cannot be"},
		{"json no base", `[{"final":"a:2"}]`, nil, "element 0"},
		{"json not an array", `[{"base":1}]`, nil, "JSON"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parsePairs(strings.NewReader(tc.in))
			if tc.err != "" {
				if !errors.Is(err, imo.ErrInvalidPairs) || !strings.Contains(err.Error(), tc.err) {
					t.Errorf("parsePairs() = %v, want ErrInvalidPairs mentioning %q", err, tc.err)
				}
				return
			}
			if err != nil || !reflect.DeepEqual(got, tc.want) {
				t.Errorf("parsePairs() = %v, %v; want %v", got, err, tc.want)
			}
		})
	}
}

func FuzzParsePairs(f *testing.F) {
	f.Add("a:1 a:2\n# c\nscratch b:1\n")
	f.Add(`[{"base":"scratch","final":"x"}]`)
	f.Fuzz(func(t *testing.T, in string) {
		pairs, err := parsePairs(strings.NewReader(in))
		if err != nil {
			if !errors.Is(err, imo.ErrInvalidPairs) {
				t.Fatalf("parsePairs() = %v, not wrapping ErrInvalidPairs", err)
			}
			return
		}
		seen := map[string]bool{}
		for _, p := range pairs {
			if p.Base == "" || p.Final == "" || seen[p.Final] {
				t.Fatalf("parsePairs() accepted %+v", pairs)
			}
			seen[p.Final] = true
		}
	})
}
