// Command moerl trains a small Mixture-of-Experts transformer and runs
// reinforcement learning for reasoning on it, on the CPU or one GPU.
//
// Usage:
//
//	moerl <command> [flags]
//
// Run `moerl help` for the commands and `moerl <command> --help` for flags.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/moerl/moerl/run"
)

// command is one subcommand: its name, a line of help, and its body, which
// parses args itself.
type command struct {
	name, summary string
	run           func(args []string, stdout, stderr io.Writer) error
}

func commands() []command {
	return []command{
		{"demo", "the main job: pretrain a base model, run RL, compare pass@k (writes study.json and a plot)", runDemo},
		{"study", "the seed article's question with replicates, intervals and a verdict per finding (study.md, study.json, plots)", runStudy},
		{"pipeline", "a multi-stage recipe from a file or built in (r1-zero, r1, kimi, qwen3, seed-thinking), every stage evaluated", runPipeline},
		{"pretrain", "train a model from scratch on a text corpus or a synthetic task", runPretrain},
		{"sft", "fine-tune a checkpoint on solutions: a task's, a corpus', or a teacher's (distillation)", runSFT},
		{"rl", "train a policy with RL (ppo, grpo, dapo, omd, drgrpo, rloo, reinforce++)", runRL},
		{"rm", "train a learned reward model that judges whole responses (Seed-Thinking's verifier)", runRM},
		{"eval", "pass@k, maj@k and mean@k of a checkpoint or of given responses", runEval},
		{"reward", "score responses with the rule-based reward (debugging)", runReward},
		{"problems", "write generated task problems as JSONL", runProblems},
		{"generate", "sample continuations of prompts from a checkpoint", runGenerate},
		{"report", "plot runs' metrics and pass@k as an HTML page and a markdown summary", runReport},
		{"bench", "measure train and generate throughput (BENCH.md workloads)", runBench},
	}
}

func main() {
	os.Exit(moerlMain(os.Args[1:], os.Stdout, os.Stderr))
}

// moerlMain executes one command line and returns the process exit code:
// 0 success, 1 a failed run, 2 a usage error, 130 a run interrupted by a
// signal (its checkpoint saved).
func moerlMain(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "help" || args[0] == "-h" || args[0] == "--help" {
		usage(stdout)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	for _, c := range commands() {
		if c.name != args[0] {
			continue
		}
		err := c.run(args[1:], stdout, stderr)
		var intr *run.Interrupted
		switch {
		case err == nil:
			return 0
		case errors.Is(err, flag.ErrHelp):
			return 0
		case errors.As(err, &intr):
			// Stopped by SIGINT or SIGTERM after saving: the shell's
			// convention for a process ended by a signal is 128 + 2.
			fmt.Fprintf(stderr, "moerl %s: %v\n", c.name, err)
			return 130
		case errors.As(err, new(usageError)):
			fmt.Fprintf(stderr, "moerl %s: %v\n", c.name, err)
			return 2
		default:
			fmt.Fprintf(stderr, "moerl %s: %v\n", c.name, err)
			return 1
		}
	}
	fmt.Fprintf(stderr, "moerl: unknown command %q\n", args[0])
	usage(stderr)
	return 2
}

func usage(w io.Writer) {
	fmt.Fprintf(w, "moerl trains a small MoE transformer and runs RL for reasoning on it.\n\nUsage: moerl <command> [flags]\n\nCommands:\n")
	for _, c := range commands() {
		fmt.Fprintf(w, "  %-10s %s\n", c.name, c.summary)
	}
	fmt.Fprintf(w, "\nRun 'moerl <command> --help' for a command's flags.\n")
}

// usageError is a mistake in the command line (exit code 2).
type usageError struct{ error }

func usagef(format string, a ...any) error { return usageError{fmt.Errorf(format, a...)} }
