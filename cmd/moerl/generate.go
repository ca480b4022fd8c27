package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/moerl/moerl/engine"
	"github.com/moerl/moerl/moe"
	"github.com/moerl/moerl/moe/tokenizer"
	"github.com/moerl/moerl/rl"
)

func runGenerate(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("generate", `Sample continuations of prompts from a checkpoint. Each prompt is
encoded with the checkpoint's tokenizer after a <bos> token; sampling stops
at <eos> or after --max-new tokens. Prints one line per sample (or JSONL).`, stderr)
	ckpt := fs.String("ckpt", "", "model checkpoint (required)")
	prompt := fs.String("prompt", "", "a prompt (use --prompts for a file of them)")
	promptsFile := fs.String("prompts", "", "file with one prompt per line")
	n := fs.Int("n", 1, "samples per prompt")
	temp := fs.Float64("temperature", 1, "sampling temperature (0: greedy)")
	topK := fs.Int("top-k", 0, "keep the k most likely tokens (0: all)")
	topP := fs.Float64("top-p", 1, "nucleus: keep the smallest set with this probability (1: all)")
	maxNew := fs.Int("max-new", 64, "new tokens per sample at most")
	seed := fs.Uint64("seed", 1, "sampling seed")
	asJSON := fs.Bool("json", false, "print JSON lines with tokens and log-probs")
	device := fs.String("device", "auto", "compute device: auto, cpu or cuda")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	switch {
	case *ckpt == "":
		return usagef("--ckpt is required")
	case *n <= 0:
		return usagef("--n must be positive, got %d", *n)
	case *temp < 0:
		return usagef("--temperature must be ≥ 0, got %g", *temp)
	case *topK < 0:
		return usagef("--top-k must be ≥ 0, got %d", *topK)
	case !(*topP > 0 && *topP <= 1):
		return usagef("--top-p must be in (0, 1], got %g", *topP)
	case *maxNew <= 0:
		return usagef("--max-new must be positive, got %d", *maxNew)
	}
	texts, err := promptTexts(*prompt, *promptsFile)
	if err != nil {
		return err
	}
	be, err := openBackend(*device, stderr)
	if err != nil {
		return err
	}
	m, tok, _, err := moe.LoadFrozen(*ckpt, be)
	if err != nil {
		return err
	}
	prompts := make([][]int32, len(texts))
	for i, t := range texts {
		ids, err := tok.Encode(t)
		if err != nil {
			return usagef("prompt %d: %v", i+1, err)
		}
		prompts[i] = append([]int32{tokenizer.BOS}, ids...)
	}
	seqs, err := m.Generate(prompts, *n, moe.SampleOptions{Temperature: *temp, TopK: *topK, TopP: *topP,
		MaxNew: *maxNew, Stop: []int32{tokenizer.EOS}}, engine.NewRNG(*seed, engine.StreamSample))
	if err != nil {
		return err
	}
	// A device backend reports a failure of the sampling at its Sync (see
	// engine.Backend); the samples are printed only once it has none.
	if err := be.Sync(); err != nil {
		return fmt.Errorf("generate: %w", err)
	}
	w := bufio.NewWriter(stdout)
	defer w.Flush()
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	for _, s := range seqs {
		text := rl.DecodeResponse(tok, s.Tokens)
		if *asJSON {
			if err := enc.Encode(map[string]any{"prompt": texts[s.Prompt], "text": text, "tokens": s.Tokens,
				"logprobs": s.LogProbs, "stopped": s.Stopped, "truncated": s.Truncated}); err != nil {
				return err
			}
			continue
		}
		fmt.Fprintf(w, "%s%s\n", texts[s.Prompt], strings.ReplaceAll(text, "\n", `\n`))
	}
	return nil
}

func promptTexts(prompt, file string) ([]string, error) {
	switch {
	case prompt != "" && file != "":
		return nil, usagef("give --prompt or --prompts, not both")
	case prompt != "":
		return []string{strings.ReplaceAll(prompt, `\n`, "\n")}, nil
	case file != "":
		data, err := os.ReadFile(file)
		if err != nil {
			return nil, fmt.Errorf("read prompts: %w", err)
		}
		var out []string
		for _, l := range strings.Split(string(data), "\n") {
			if l = strings.TrimRight(l, "\r"); l != "" {
				out = append(out, strings.ReplaceAll(l, `\n`, "\n"))
			}
		}
		if len(out) == 0 {
			return nil, fmt.Errorf("%s holds no prompts", file)
		}
		return out, nil
	}
	return nil, usagef("give a --prompt or a --prompts file")
}
