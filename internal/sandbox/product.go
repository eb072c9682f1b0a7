package sandbox

import (
	"fmt"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// Product is a release of several applications built on one base: every
// image has the same OS layer (per platform) and runtime layer; the v2 and
// v3 images also share a patch layer no v1 has; each image has its own
// application layer.
type Product struct {
	// Images are every image, by "APP:TAG" with TAG v1, v2 or v3; with one
	// platform they are v1.Image values, with several v1.ImageIndex values.
	Images map[string]Artifact
	// Base are the layers every image has.
	Base []v1.Hash
	// Patch is the layer every v2 and v3 image has and no v1 image has.
	Patch v1.Hash
	// Own are the application layers of the v2 and v3 images, each in one
	// image only.
	Own []v1.Hash
}

// NewProduct builds a product of the apps, in format f, for the platforms
// ("os/arch[/variant]"). Like [NewAppPair] it is small and deterministic.
func NewProduct(f Format, apps []string, platforms ...string) (*Product, error) {
	if len(apps) == 0 || len(platforms) == 0 {
		return nil, fmt.Errorf("NewProduct: no app or no platform")
	}
	p := &Product{Images: map[string]Artifact{}}
	runtime, err := Layer(f.Layer, "usr/lib/runtime.txt", Text("runtime", 256<<10))
	if err != nil {
		return nil, err
	}
	patch, err := Layer(f.Layer, "usr/lib/runtime-fix.txt", Text("patch", 64<<10))
	if err != nil {
		return nil, err
	}
	osLayers := map[string]v1.Layer{}
	for _, ps := range platforms {
		if osLayers[ps], err = Layer(f.Layer, "etc/os-release", "ID=sampleos\nARCH="+ps+"\n", "usr/share/doc/os.txt", Text("os "+ps, 128<<10)); err != nil {
			return nil, err
		}
		if err := addDigest(&p.Base, osLayers[ps]); err != nil {
			return nil, err
		}
	}
	if err := addDigest(&p.Base, runtime); err != nil {
		return nil, err
	}
	if p.Patch, err = patch.Digest(); err != nil {
		return nil, err
	}
	for _, app := range apps {
		for _, tag := range []string{"v1", "v2", "v3"} {
			imgs := map[string]v1.Image{}
			for _, ps := range platforms {
				plat, err := v1.ParsePlatform(ps)
				if err != nil {
					return nil, err
				}
				own, err := Layer(f.Layer, "app/"+app+"/VERSION", tag+" "+ps, "app/"+app+"/notes.txt", Text(app+tag+ps, 16<<10))
				if err != nil {
					return nil, err
				}
				layers := []v1.Layer{osLayers[ps], runtime}
				if tag != "v1" {
					layers = append(layers, patch)
					if err := addDigest(&p.Own, own); err != nil {
						return nil, err
					}
				}
				if imgs[ps], err = f.Image(*plat, append(layers, own)...); err != nil {
					return nil, err
				}
			}
			key := app + ":" + tag
			if len(platforms) == 1 {
				p.Images[key] = imgs[platforms[0]]
			} else if p.Images[key], err = f.ImageIndex(imgs); err != nil {
				return nil, err
			}
		}
	}
	return p, nil
}

func addDigest(to *[]v1.Hash, l v1.Layer) error {
	h, err := l.Digest()
	if err != nil {
		return err
	}
	*to = append(*to, h)
	return nil
}
