//go:build !amd64

package cpu

func archSIMD() []*simdPath { return nil }
