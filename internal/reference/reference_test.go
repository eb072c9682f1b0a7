package reference

import (
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	d := "sha256:" + strings.Repeat("a", 64)
	tests := []struct {
		in, repo, tag, digest, err string
	}{
		{in: "reg.example/app:v2", repo: "reg.example/app", tag: "v2"},
		{in: "reg.example:5000/team/app", repo: "reg.example:5000/team/app"},
		{in: "reg.example/app@" + d, repo: "reg.example/app", digest: d},
		{in: "reg.example/app:td@" + d, repo: "reg.example/app", tag: "td", digest: d},
		{in: "localhost:5000/app:v1", repo: "localhost:5000/app", tag: "v1"},
		{in: "reg.example/App:v2", err: "repository can only contain"},
		{in: "reg.example/app:" + strings.Repeat("t", 129), err: "tag must be between 1 and 128"},
		{in: "reg.example/app@sha256:abc", err: "digest"},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			r, err := Parse(tc.in)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("Parse(%q) = %v, want an error saying %q", tc.in, err, tc.err)
				}
				return
			}
			if err != nil || r.Repo.String() != tc.repo || r.Tag != tc.tag || r.Digest != tc.digest {
				t.Fatalf("Parse(%q) = %+v, %v; want %s, tag %q, digest %q", tc.in, r, err, tc.repo, tc.tag, tc.digest)
			}
			if r.String() != tc.in {
				t.Errorf("Parse(%q).String() = %q", tc.in, r.String())
			}
		})
	}
}

func TestHostsAndRegistries(t *testing.T) {
	tests := []struct {
		in                  string
		host, namesRegistry bool
	}{
		{"127.0.0.1:5201", true, false},
		{"site.example", true, false},
		{"localhost", true, false},
		{"localhost:5000", true, false},
		{"app:v2", false, false},
		{"app", false, false},
		{"site.example/app:v2", false, true},
		{"localhost/app", false, true},
		{"team/app:v2", false, false},
		{"reg:5000/app", false, true},
	}
	for _, tc := range tests {
		if got := IsHost(tc.in); got != tc.host {
			t.Errorf("IsHost(%q) = %v, want %v", tc.in, got, tc.host)
		}
		if got := NamesRegistry(tc.in); got != tc.namesRegistry {
			t.Errorf("NamesRegistry(%q) = %v, want %v", tc.in, got, tc.namesRegistry)
		}
	}
}

func TestRepositoryPath(t *testing.T) {
	for s, want := range map[string]bool{
		"team/app": true, "a": true, "a.b_c__d-e": true, "mirror/team/app": true,
		"Team/App": false, "a//b": false, "/a": false, "a/": false, "": false, "a..b": false,
	} {
		if got := RepositoryPath(s); got != want {
			t.Errorf("RepositoryPath(%q) = %v, want %v", s, got, want)
		}
	}
}
