# kernels/ptx.mk: builds the PTX that engine/cuda embeds, and checks it.
#
# Paths are relative to the repository root: include this file from the
# top-level Makefile (`include kernels/ptx.mk`, after the Makefile's own
# first target, which stays the default goal) or run it from the root with
# `make -f kernels/ptx.mk ptx` / `make -f kernels/ptx.mk ptx-check`. Its
# variables all start with KERNELS_.
#
#   ptx        nvcc -ptx -arch=compute_80 for every kernels/*.cu into
#              kernels/ptx/NAME.ptx (PTX ISA 7.8; the driver JIT-compiles it
#              for the GPU it runs on). The output carries no paths or dates,
#              so the same toolkit gives the same bytes.
#   ptx-check  rebuilds into a temporary folder and fails if the committed
#              kernels/ptx/ differs (a file changed, missing or extra); then
#              assembles every file with ptxas -arch=sm_90 -v, prints each
#              kernel's registers, shared memory, stack and spills, and fails
#              on an assembler error.
#
#   kernels-emu-test  runs every kernel on the CPU emulator (kernels/emu).
#
# Needs nvcc and ptxas (Debian: kernels/install-cuda-toolkit.sh); the
# emulator test needs only g++.

KERNELS_NVCC ?= nvcc
KERNELS_PTXAS ?= ptxas
KERNELS_PTXAS_ARCH ?= sm_90
KERNELS_NVCCFLAGS := -ptx -arch=compute_80
KERNELS_CU := $(sort $(wildcard kernels/*.cu))
KERNELS_HDR := $(wildcard kernels/*.cuh)
KERNELS_PTX := $(patsubst kernels/%.cu,kernels/ptx/%.ptx,$(KERNELS_CU))

.PHONY: ptx ptx-check

ptx: $(KERNELS_PTX)

kernels/ptx/%.ptx: kernels/%.cu $(KERNELS_HDR)
	@mkdir -p kernels/ptx
	$(KERNELS_NVCC) $(KERNELS_NVCCFLAGS) -o $@ $<

ptx-check:
	@set -e; \
	tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; \
	mkdir "$$tmp/ptx"; \
	for cu in $(KERNELS_CU); do \
		$(KERNELS_NVCC) $(KERNELS_NVCCFLAGS) -o "$$tmp/ptx/$$(basename $$cu .cu).ptx" $$cu; \
	done; \
	if ! diff -r kernels/ptx "$$tmp/ptx" >"$$tmp/diff"; then \
		head -n 40 "$$tmp/diff"; \
		echo "ptx-check: kernels/ptx differs from what kernels/*.cu build to; run make ptx and commit" >&2; \
		exit 1; \
	fi; \
	echo "ptx-check: kernels/ptx matches the sources ($(words $(KERNELS_CU)) files)"; \
	printf '%-14s %-38s %5s %7s %6s %6s %6s\n' file kernel regs smem stack spillS spillL; \
	for p in "$$tmp"/ptx/*.ptx; do \
		if ! $(KERNELS_PTXAS) -arch=$(KERNELS_PTXAS_ARCH) -v "$$p" -o "$$tmp/cubin" >"$$tmp/log" 2>&1; then \
			cat "$$tmp/log"; echo "ptx-check: ptxas failed on $$(basename $$p)" >&2; exit 1; \
		fi; \
		awk -v file="$$(basename $$p)" ' \
			/Compiling entry function/ { if (k != "") out(); k = $$0; sub(/.*function .?/, "", k); sub(/.? for .*/, "", k); regs = smem = stack = ss = sl = 0 } \
			/bytes stack frame/ && k != "" && !seen { stack = $$1; ss = $$5; sl = $$9; seen = 1 } \
			/Used [0-9]+ registers/ { for (i = 1; i <= NF; i++) { if ($$i ~ /registers/) regs = $$(i-1); if ($$i == "smem") smem = $$(i-2) } } \
			function out() { printf "%-14s %-38s %5s %7s %6s %6s %6s\n", file, k, regs, smem, stack, ss, sl; seen = 0 } \
			END { if (k != "") out() }' "$$tmp/log"; \
		if grep -qi 'error' "$$tmp/log"; then cat "$$tmp/log"; exit 1; fi; \
	done

# kernels-emu-test runs every kernel on the CPU emulator in kernels/emu and
# compares it with float64 references (needs a C++20 compiler, no GPU).
KERNELS_CXX ?= g++

.PHONY: kernels-emu-test
kernels-emu-test:
	@set -e; tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; \
	$(KERNELS_CXX) -std=c++20 -O1 -Wall -Wno-unknown-pragmas -o "$$tmp/emu_test" kernels/emu/emu_test.cc; \
	"$$tmp/emu_test"

# kernels-emu-lib builds the emulated kernels as a shared library, and
# kernels-emu-gotest runs engine/cuda's GPU test cases through it: the Go
# launchers and the test harness end to end against the CPU backend.
KERNELS_EMU_LIB ?= $(or $(TMPDIR),/tmp)/libmoerlemu.so

.PHONY: kernels-emu-lib kernels-emu-gotest
kernels-emu-lib:
	$(KERNELS_CXX) -std=c++20 -O1 -Wall -Wno-unknown-pragmas -shared -fPIC -o $(KERNELS_EMU_LIB) kernels/emu/emu_lib.cc

kernels-emu-gotest: kernels-emu-lib
	MOERL_EMU_LIB=$(KERNELS_EMU_LIB) go test -count=1 -run Emulator -v ./engine/cuda/
