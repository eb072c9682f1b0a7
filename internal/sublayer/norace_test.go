//go:build !race

package sublayer

const raceEnabled = false
