//go:build !race

package nmp

const raceEnabled = false
