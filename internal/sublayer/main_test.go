package sublayer

import (
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	if raceEnabled {
		// Still more than one pgzip block in the last probe stage.
		testTarSize = 1536 << 10
		probeSizes = []int{64 << 10, 1280 << 10}
	}
	goleak.VerifyTestMain(m)
}
