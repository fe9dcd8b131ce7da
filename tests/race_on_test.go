//go:build race

package tests

// raceEnabled builds the Caddy under test with the race detector too.
const raceEnabled = true
