# moerl: build, test, benchmark, and the GPU bundle. `make help` lists targets.
GO      ?= go
BIN     ?= moerl
LDFLAGS ?= -s -w
export CGO_ENABLED = 0

.PHONY: help build test test-long bench demo gpu-bundle fmt vet
help:
	@echo "build       build ./moerl"
	@echo "test        vet and run every test (about 10 minutes on 2 cores at most)"
	@echo "test-long   also the long checks (MOERL_LONG=1)"
	@echo "bench       GEMM and op benchmarks, then moerl bench"
	@echo "demo        the main job: pretrain, RL, pass@k study"
	@echo "ptx         compile kernels/*.cu to kernels/ptx/*.ptx (needs nvcc)"
	@echo "ptx-check   check the committed PTX is current; ptxas register report"
	@echo "gpu-bundle  build .gpu/ (moerl and GPU test binaries, run.sh) for the GPU machine"

build:
	$(GO) build -trimpath -ldflags='$(LDFLAGS)' -o $(BIN) ./cmd/moerl

vet:
	$(GO) vet ./...

fmt:
	@test -z "$$(gofmt -l .)" || { gofmt -l .; echo "gofmt needed"; exit 1; }

test: fmt vet
	$(GO) test -timeout 15m ./...

test-long: fmt vet
	MOERL_LONG=1 $(GO) test -timeout 60m ./...

bench: build
	$(GO) test -run XXX -bench . -benchtime 20x ./engine/cpu/gemm/
	./$(BIN) bench

demo: build
	./$(BIN) demo

-include kernels/ptx.mk
-include gpu.mk
