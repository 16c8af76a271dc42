//go:build race

package nmp

// raceEnabled: the race detector makes sync.Pool drop objects at random,
// so allocation counts are not asserted under it.
const raceEnabled = true
