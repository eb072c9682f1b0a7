package imo

import (
	"slices"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/imokit/imo/archive"
	"github.com/imokit/imo/internal/graph"
	"github.com/imokit/imo/inventory"
)

// TestLeaveOut checks the rule that decides what an archive carries, on
// hand-made images: no registry, no archive.
func TestLeaveOut(t *testing.T) {
	h := func(c byte) v1.Hash { return v1.Hash{Algorithm: "sha256", Hex: strings.Repeat(string(c), 64)} }
	blob := func(c byte, config bool, mt types.MediaType) *graph.Blob {
		return &graph.Blob{Desc: v1.Descriptor{MediaType: mt, Digest: h(c), Size: 10}, Config: config, NeededBy: []string{"m"}}
	}
	config, osLayer, appLayer := blob('c', true, types.DockerConfigJSON), blob('o', false, types.DockerLayer), blob('a', false, types.DockerLayer)
	foreign := blob('f', false, types.DockerForeignLayer)
	set := func(cs ...byte) map[v1.Hash]bool {
		m := map[v1.Hash]bool{}
		for _, c := range cs {
			m[h(c)] = true
		}
		return m
	}
	taken := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	site := &inventory.Inventory{Registry: "site:5000", Prefix: "mirror", Taken: taken,
		Blobs: []inventory.Blob{{Digest: h('a'), Kind: inventory.KindLayer, Repositories: []string{"mirror/app", "mirror/other"}}, {Digest: h('c'), Kind: inventory.KindConfig, Repositories: []string{"mirror/app"}}}}
	inInventory := archive.InInventory("site:5000/mirror", taken)
	earlier := []sentArchive{{PlanSent: archive.PlanSent{Archive: "v1.tar"}, blobs: set('o', 'a')}}

	tests := []struct {
		name   string
		blobs  []*graph.Blob
		images []imageBlobs
		have   []*inventory.Inventory
		sent   []sentArchive
		want   []archive.Reason // "" for carried
		heldBy map[v1.Hash][]string
	}{
		{
			name:   "whole image: everything carried",
			blobs:  []*graph.Blob{config, osLayer, appLayer},
			images: []imageBlobs{{uses: set('c', 'o', 'a')}},
			want:   []archive.Reason{"", "", ""},
		},
		{
			name:   "a layer the base has is left out, the config never",
			blobs:  []*graph.Blob{config, osLayer, appLayer},
			images: []imageBlobs{{uses: set('c', 'o', 'a'), base: set('c', 'o')}},
			want:   []archive.Reason{"", archive.ReasonInBase, ""},
		},
		{
			name:  "a layer is carried when one image's base lacks it",
			blobs: []*graph.Blob{osLayer},
			images: []imageBlobs{
				{uses: set('o'), base: set('o')},
				{uses: set('o')},
			},
			want: []archive.Reason{""},
		},
		{
			name:  "a layer no image whose base lacks it uses is left out",
			blobs: []*graph.Blob{osLayer},
			images: []imageBlobs{
				{uses: set('o'), base: set('o')},
				{uses: set('a')},
			},
			want: []archive.Reason{archive.ReasonInBase},
		},
		{
			name:   "a foreign layer is never carried, even from scratch",
			blobs:  []*graph.Blob{foreign},
			images: []imageBlobs{{uses: set('f')}},
			want:   []archive.Reason{archive.ReasonForeign},
		},
		{
			name:   "an inventory leaves out configs and layers and says where they are",
			blobs:  []*graph.Blob{config, osLayer, appLayer},
			images: []imageBlobs{{uses: set('c', 'o', 'a')}},
			have:   []*inventory.Inventory{site},
			want:   []archive.Reason{inInventory, "", inInventory},
			heldBy: map[v1.Hash][]string{h('c'): {"mirror/app"}, h('a'): {"mirror/app", "mirror/other"}},
		},
		{
			name:   "in base wins over the inventory, which still says where it is",
			blobs:  []*graph.Blob{appLayer},
			images: []imageBlobs{{uses: set('a'), base: set('a')}},
			have:   []*inventory.Inventory{site},
			want:   []archive.Reason{archive.ReasonInBase},
			heldBy: map[v1.Hash][]string{h('a'): {"mirror/app", "mirror/other"}},
		},
		{
			name:   "an earlier archive leaves out what it sent; the inventory is named first",
			blobs:  []*graph.Blob{config, osLayer, appLayer},
			images: []imageBlobs{{uses: set('c', 'o', 'a')}},
			have:   []*inventory.Inventory{site},
			sent:   earlier,
			want:   []archive.Reason{inInventory, archive.SentIn("v1.tar"), inInventory},
			heldBy: map[v1.Hash][]string{h('c'): {"mirror/app"}, h('a'): {"mirror/app", "mirror/other"}},
		},
		{
			name:   "what an earlier archive sent and the base has is in base",
			blobs:  []*graph.Blob{osLayer, appLayer},
			images: []imageBlobs{{uses: set('o', 'a'), base: set('o')}},
			sent:   earlier,
			want:   []archive.Reason{archive.ReasonInBase, archive.SentIn("v1.tar")},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := leaveOut(tc.blobs, tc.images, tc.have, tc.sent)
			if len(got) != len(tc.blobs) {
				t.Fatalf("leaveOut() decided %d blobs, want %d", len(got), len(tc.blobs))
			}
			for k, pb := range got {
				if pb.Reason != tc.want[k] || pb.Included != (tc.want[k] == "") {
					t.Errorf("blob %s: included %v, reason %q; want reason %q", pb.Digest, pb.Included, pb.Reason, tc.want[k])
				}
				if !slices.Equal(pb.HeldBy, tc.heldBy[pb.Digest]) {
					t.Errorf("blob %s: held by %v, want %v", pb.Digest, pb.HeldBy, tc.heldBy[pb.Digest])
				}
			}
		})
	}
}
