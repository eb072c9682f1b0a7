package volume

import (
	"fmt"
	"math"
	"strconv"
	"strings"
)

// Medium is a kind of transfer medium and the largest volume it holds.
type Medium struct {
	Name string
	// Size is the largest volume file the medium holds.
	Size int64
	// About says where the size comes from.
	About string
}

// fsReserve is what a disc's file system (ISO 9660, UDF) takes from its
// capacity: a volume as large as the disc would not fit in one file.
const fsReserve = 4 << 20

// Media are the transfer media --volume-size knows by name. Disc sizes are
// the recordable sectors of the smaller of the -R and +R formats, times
// 2,048 bytes, less 4 MiB for the disc's file system.
var Media = []Medium{
	{"cd", 360_000*2048 - fsReserve, "CD-R, 80 minutes: 360,000 sectors (737,280,000 bytes), less 4 MiB"},
	{"dvd", 2_295_104*2048 - fsReserve, "DVD+R: 2,295,104 sectors (4,700,372,992 bytes), less 4 MiB"},
	{"dvd-dl", 4_171_712*2048 - fsReserve, "DVD-R DL: 4,171,712 sectors (8,543,666,176 bytes), less 4 MiB"},
	{"bd25", 12_219_392*2048 - fsReserve, "BD-R: 12,219,392 sectors (25,025,314,816 bytes), less 4 MiB"},
	{"bd50", 24_438_784*2048 - fsReserve, "BD-R DL: 24,438,784 sectors (50,050,629,632 bytes), less 4 MiB"},
	{"fat32", 4<<30 - 1, "the largest file FAT32 holds: 4 GiB - 1 byte"},
}

// units are the suffixes ParseSize takes, longest first.
var units = []struct {
	suffix string
	factor float64
}{
	{"kib", 1 << 10}, {"mib", 1 << 20}, {"gib", 1 << 30}, {"tib", 1 << 40},
	{"kb", 1e3}, {"mb", 1e6}, {"gb", 1e9}, {"tb", 1e12},
	{"k", 1e3}, {"m", 1e6}, {"g", 1e9}, {"t", 1e12},
	{"b", 1},
}

// ParseSize reads a volume size: bytes ("65536"), decimal units ("4.7G",
// "700MB" = 700,000,000), binary units ("4GiB"), or the name of a medium
// in [Media] ("dvd", "fat32"). It refuses sizes under [MinSize].
func ParseSize(s string) (int64, error) {
	text := strings.ToLower(strings.TrimSpace(s))
	for _, m := range Media {
		if text == m.Name {
			return m.Size, nil
		}
	}
	num, factor := text, 1.0
	for _, u := range units {
		if strings.HasSuffix(text, u.suffix) {
			num, factor = strings.TrimSpace(strings.TrimSuffix(text, u.suffix)), u.factor
			break
		}
	}
	f, err := strconv.ParseFloat(num, 64)
	if err != nil || f <= 0 || math.IsInf(f, 0) || math.IsNaN(f) {
		return 0, fmt.Errorf("volume size %q: want bytes, a size such as 4.7G or 4GiB, or one of %s", s, mediaNames())
	}
	v := math.Floor(f * factor)
	if v > math.MaxInt64/2 {
		return 0, fmt.Errorf("volume size %q is too large", s)
	}
	if int64(v) < MinSize {
		return 0, fmt.Errorf("volume size %q is %d bytes: the smallest is %d (64 KiB)", s, int64(v), MinSize)
	}
	return int64(v), nil
}

func mediaNames() string {
	names := make([]string, len(Media))
	for i, m := range Media {
		names[i] = m.Name
	}
	return strings.Join(names, ", ")
}
