# gpu-bundle: everything a GPU machine (no Go there) needs, in .gpu/:
# bundle.tar.gz (the moerl binary, the test binaries of the packages with
# GPU tests, the summariser), the peer benchmark script with peer_mem.py
# (which adds the peer's peak memory to its results), and run.sh, which
# unpacks and runs them all within one 10-minute command and writes a
# summary to $OUT.
#
# The peer script is looked for, in order: $(PEER_SCRIPT) if given (make
# gpu-bundle PEER_SCRIPT=path), $MOERL_PEER_DIR/torch_moe_bench.py, then
# shared/peers/ inside the checkout, then the project's shared/peers/ next
# to the main repository (found through git, so a worktree anywhere finds
# it too).
GPU_DIR      := .gpu
GPU_TESTPKGS := ./engine/cuda ./moe
GPU_MAX_MB   := 48
GPU_PEER_MAIN := $(shell d=$$(git rev-parse --path-format=absolute --git-common-dir 2>/dev/null) && echo $$(dirname "$$d")/../shared/peers)
PEER_SCRIPT  ?= $(firstword $(wildcard $(if $(MOERL_PEER_DIR),$(MOERL_PEER_DIR)/torch_moe_bench.py) \
                  shared/peers/torch_moe_bench.py ../shared/peers/torch_moe_bench.py \
                  $(GPU_PEER_MAIN)/torch_moe_bench.py))

.PHONY: gpu-bundle
gpu-bundle:
	rm -rf $(GPU_DIR) && mkdir -p $(GPU_DIR)/bin
	$(GO) build -trimpath -ldflags='-s -w' -o $(GPU_DIR)/bin/moerl ./cmd/moerl
	$(GO) build -trimpath -ldflags='-s -w' -o $(GPU_DIR)/bin/gpusummary ./scripts/gpusummary
	for p in $(GPU_TESTPKGS); do \
	  $(GO) test -c -trimpath -ldflags='-s -w' -o $(GPU_DIR)/bin/$$(basename $$p).test $$p || exit 1; \
	done
	# The binaries travel gzipped (about 60 MiB become 21): the device tool
	# carries 64 MiB with the working tree. run.sh unpacks them.
	tar -C $(GPU_DIR)/bin -cf - . | gzip -9 > $(GPU_DIR)/bundle.tar.gz && rm -rf $(GPU_DIR)/bin
	@if [ -n "$(PEER_SCRIPT)" ] && [ -f "$(PEER_SCRIPT)" ]; then cp "$(PEER_SCRIPT)" $(GPU_DIR)/ && echo "peer: $(PEER_SCRIPT)"; \
	else echo "gpu-bundle: no peer script found (set PEER_SCRIPT or MOERL_PEER_DIR): run.sh will skip the peer"; fi
	cp scripts/peer_mem.py $(GPU_DIR)/
	cp scripts/gpu-run.sh $(GPU_DIR)/run.sh && chmod +x $(GPU_DIR)/run.sh
	@kb=$$(du -sk $(GPU_DIR) | cut -f1); echo "gpu-bundle: $(GPU_DIR) is $$((kb / 1024)) MiB"; \
	if [ $$kb -gt $$(( $(GPU_MAX_MB) * 1024 )) ]; then \
	  echo "gpu-bundle: over $(GPU_MAX_MB) MiB: with the working tree it would not fit the device tool's 64 MiB" >&2; exit 1; fi
