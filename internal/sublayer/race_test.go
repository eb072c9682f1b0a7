//go:build race

package sublayer

// The race detector slows compression about tenfold: test with less data.
const raceEnabled = true
