package reference

import (
	"strings"
	"testing"
)

func TestParseLocation(t *testing.T) {
	digest := "sha256:" + strings.Repeat("a", 64)
	for _, tc := range []struct {
		in     string
		kind   Kind
		path   string
		tag    string
		digest string
		repo   string // for a registry
		err    string
	}{
		{in: "reg.example/app:v2", kind: Registry, repo: "reg.example/app", tag: "v2"},
		{in: "docker://reg.example:5000/team/app:v2", kind: Registry, repo: "reg.example:5000/team/app", tag: "v2"},
		{in: "oci:/srv/images", kind: Layout, path: "/srv/images"},
		{in: "oci:/srv/images:v2", kind: Layout, path: "/srv/images", tag: "v2"},
		{in: "oci:layout@" + digest, kind: Layout, path: "layout", digest: digest},
		{in: "oci:layout:v2@" + digest, kind: Layout, path: "layout", tag: "v2", digest: digest},
		{in: "oci:layout:reg.example:5000/app:v2", kind: Layout, path: "layout", tag: "reg.example:5000/app:v2"},
		{in: "oci-archive:app.tar:v2", kind: OCIArchive, path: "app.tar", tag: "v2"},
		{in: "docker-archive:saved.tar", kind: DockerArchive, path: "saved.tar"},
		{in: "docker-archive:saved.tar:team/app:v2", kind: DockerArchive, path: "saved.tar", tag: "team/app:v2"},
		{in: "oci:", err: "no path"},
		{in: "oci::v2", err: "no path"},
		{in: "oci:x:bad tag", err: "not an image name"},
		{in: "oci:x@sha256:123", err: "not a digest"},
		{in: "docker-archive:x.tar:notag", err: "not REPO:TAG"},
		{in: "docker://UPPER/App", err: "repository"},
	} {
		got, err := ParseLocation(tc.in)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("ParseLocation(%q) = %+v, %v; want an error saying %q", tc.in, got, err, tc.err)
			}
			continue
		}
		if err != nil {
			t.Errorf("ParseLocation(%q) = %v", tc.in, err)
			continue
		}
		if got.Kind != tc.kind || got.Path != tc.path || (got.Kind != Registry && got.Tag != tc.tag) || got.Digest != tc.digest || got.String() != tc.in {
			t.Errorf("ParseLocation(%q) = %+v", tc.in, got)
		}
		if tc.kind == Registry && (got.Ref.Repo.String() != tc.repo || got.Ref.Tag != tc.tag) {
			t.Errorf("ParseLocation(%q) names %s tag %q, want %s tag %q", tc.in, got.Ref.Repo, got.Ref.Tag, tc.repo, tc.tag)
		}
	}
}

// FuzzParseLocation checks that any string parses or is refused without a
// crash, and that what parses as a layout has a path.
func FuzzParseLocation(f *testing.F) {
	for _, s := range []string{"oci:dir:v1", "oci-archive:a.tar@sha256:" + strings.Repeat("a", 64), "docker-archive:x:a/b:c", "docker://reg.example/a:b", "oci:@"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		l, err := ParseLocation(s)
		if err == nil && l.Kind != Registry && l.Path == "" {
			t.Fatalf("ParseLocation(%q) has no path", s)
		}
	})
}
