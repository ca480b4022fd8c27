// Package rl runs reinforcement learning for reasoning on a moe.Model:
// rollouts (G sampled responses per prompt, sharing one prefill), rule-based
// rewards, advantage estimation and the policy losses of rl/algo, the
// training loop with reference model and critic, the pass@k evaluation of
// a checkpoint, and the pretraining mix that makes a base model worth
// studying.
//
// Subpackages: task (problem generators and verifiers), reward (R1-style
// scoring), algo (estimators, losses, presets), eval (pass@k, maj@k).
package rl
