// Package run is moerl's run layer: the stages that turn checkpoints into
// checkpoints (pretrain, sft, distill, rm, rl, eval), the run folders that
// hold their results, and pipelines, which are lists of stages read from a
// file.
//
// A run folder owns everything about a stage's life that is not its math:
//
//   - run.json, the resolved settings and a key, a digest of those settings
//     and of the input checkpoints' contents, so that a stage whose inputs
//     and settings have not changed is reused, and one whose have changed is
//     never mistaken for it;
//   - metrics.jsonl, one line per step, cut back to the checkpoint's step
//     when a run resumes;
//   - the save cadence, and a checkpoint at the next step boundary when the
//     process is asked to stop (SIGINT, SIGTERM), so that a resumed run ends
//     bitwise-identical to one never stopped;
//   - a backend sync and a check of the weights at every step boundary, so a
//     device fault or a NaN stops the run at the step it happened, with the
//     last good checkpoint kept.
//
// The training loops themselves live here (Loop drives a Stepper) and in
// the packages below (moe's language-model step, rl's RL step); cmd/moerl
// only parses flags and prints.
package run
