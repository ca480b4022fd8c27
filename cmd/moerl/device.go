package main

import (
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/moerl/moerl/engine"
	"github.com/moerl/moerl/engine/cpu"
	"github.com/moerl/moerl/engine/cuda"
)

// openBackend picks the compute backend: "cpu", "cuda" (an error naming what
// is missing when CUDA cannot run), or "auto" (CUDA when a driver and a
// device are there, else the CPU; it says which it chose).
func openBackend(name string, stderr io.Writer) (engine.Backend, error) {
	switch name {
	case "cpu":
		cpuNote(stderr)
		return cpu.New(), nil
	case "cuda":
		be, err := cuda.New()
		if err != nil {
			return nil, fmt.Errorf("--device cuda: %w", err)
		}
		return be, nil
	case "auto":
		if be, err := cuda.New(); err == nil {
			fmt.Fprintf(stderr, "device: cuda (%s)\n", be.Device())
			return be, nil
		} else {
			fmt.Fprintf(stderr, "device: cpu (%v)\n", err)
		}
		cpuNote(stderr)
		return cpu.New(), nil
	}
	return nil, usagef("--device %q: want auto, cpu or cuda", name)
}

// cpuNote says that MOERL_BF16, when it asks for bf16 GEMMs, does not
// apply: the CPU computes in float32, and a user timing or comparing runs
// should not believe otherwise.
func cpuNote(stderr io.Writer) {
	switch v := strings.ToLower(strings.TrimSpace(os.Getenv("MOERL_BF16"))); v {
	case "", "0", "off", "false", "no":
	default:
		fmt.Fprintf(stderr, "note: MOERL_BF16=%s has no effect on the cpu backend, which computes in float32\n", v)
	}
}
