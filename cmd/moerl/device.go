package main

import (
	"fmt"
	"io"

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
		return cpu.New(), nil
	}
	return nil, usagef("--device %q: want auto, cpu or cuda", name)
}
