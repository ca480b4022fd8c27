// Package algo holds the building blocks of moerl's RL algorithms as pure
// functions over a batch of sampled responses: advantage estimators, KL
// estimators, policy losses with their gradients, the critic's value loss,
// batch aggregation, reward shaping and group filtering.
//
// An algorithm is a choice of parts. A Config names one advantage estimator,
// one KL placement and estimator, one policy term, one aggregation, one
// rollout correction and the reward's scheme and control; the presets
// (ppo, grpo, dapo, omd, drgrpo, rloo, reinforce++, gspo, cispo) are Configs
// with the defaults of the papers and reference implementations, and every
// field can be overridden by its JSON name. Each part is a small function
// registered by name, with one signature per kind, in the manner of verl's
// core_algos.py (registry.go): one entry per name, from which the allowed
// values (Allowed), their help (Parts), validation and the traits other
// parts ask about are derived, so adding one is writing one function and
// registering it. Every field's help tag (Help) says what it does.
//
// The functions compute in float64 from the float32 data the model produces
// and return float32 gradients; they allocate their outputs and never modify
// their inputs.
//
// Layout of a Batch: B responses, each padded to L tokens, stored row-major
// in per-token slices of length B·L (row i is response i). Per-response data
// (rewards, groups, lengths, truncation) are slices of length B.
package algo
