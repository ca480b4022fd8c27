# gpu-bundle: everything a GPU machine (no Go there) needs, in .gpu/:
# the moerl binary, the test binaries of the packages with GPU tests, the
# peer benchmark script, and run.sh, which runs them all and writes a
# summary and a log to $OUT.
GPU_DIR      := .gpu
GPU_TESTPKGS := ./engine/cuda ./moe
PEER_SCRIPT  ?= ../shared/peers/torch_moe_bench.py

.PHONY: gpu-bundle
gpu-bundle:
	rm -rf $(GPU_DIR) && mkdir -p $(GPU_DIR)
	$(GO) build -trimpath -ldflags='-s -w' -o $(GPU_DIR)/moerl ./cmd/moerl
	for p in $(GPU_TESTPKGS); do \
	  $(GO) test -c -trimpath -ldflags='-s -w' -o $(GPU_DIR)/$$(basename $$p).test $$p || exit 1; \
	done
	if [ -f $(PEER_SCRIPT) ]; then cp $(PEER_SCRIPT) $(GPU_DIR)/; else echo "no peer script at $(PEER_SCRIPT): run.sh will skip it"; fi
	cp scripts/gpu-run.sh $(GPU_DIR)/run.sh && chmod +x $(GPU_DIR)/run.sh
	@du -sh $(GPU_DIR)
