package report

// part is a group of runs whose metrics mean the same thing and are
// overlaid: "loss" is cross-entropy in pretraining but the policy loss in
// RL, so the two never share a plot.
type part string

const (
	partLM part = "lm" // pretraining, SFT, distillation: next-token training
	partRL part = "rl"
	partRM part = "rm" // the learned reward model
)

var partTitles = map[part]string{
	partLM: "Pretraining and fine-tuning",
	partRL: "Reinforcement learning",
	partRM: "Reward model",
}

var partXLabels = map[part]string{
	partLM: "optimizer step",
	partRL: "RL step (one rollout batch and its update)",
	partRM: "step",
}

// metricInfo describes a per-step field the report knows.
type metricInfo struct {
	field   string
	section string
	title   string
	unit    string // the y-axis label
	main    bool   // in the markdown summary table
	rate    bool   // a share in [0, 1]: the y axis spans 0..1
}

// catalog lists the fields each part plots, in order; the fields and
// their meanings are those of moe.StepStats, cmd/moerl's pretraining log
// and rl.StepStats (SPEC-RL.md). A field not listed is plotted under
// "Other metrics".
var catalog = map[part][]metricInfo{
	partLM: {
		{field: "loss", section: "Loss", title: "Training loss", unit: "cross-entropy (nats/token)", main: true},
		{field: "aux_loss", section: "Loss", title: "Load-balancing loss", unit: "aux loss (before its coefficient)", main: true},
		{field: "router_z_loss", section: "Loss", title: "Router z-loss", unit: "mean (log Σ exp z)²"},
		{field: "expert_load_entropy", section: "Routing", title: "Expert-load entropy", unit: "entropy of the experts' token shares (nats)", main: true},
		{field: "expert_load_max", section: "Routing", title: "Largest expert load", unit: "share of routed tokens", main: true},
		{field: "router_margin", section: "Routing", title: "Router margin", unit: "gate gap between k-th and next expert"},
		{field: "grad_norm", section: "Optimization", title: "Gradient norm", unit: "global L2 norm", main: true},
		{field: "lr", section: "Optimization", title: "Learning rate", unit: "learning rate"},
		{field: "tokens", section: "Throughput", title: "Target tokens per step", unit: "tokens"},
		{field: "tokens_per_s", section: "Throughput", title: "Training throughput", unit: "tokens/s", main: true},
	},
	partRL: {
		{field: "reward_mean", section: "Reward", title: "Mean reward", unit: "reward per response", main: true},
		{field: "reward_std", section: "Reward", title: "Spread of rewards in a batch", unit: "standard deviation of rewards"},
		{field: "accuracy", section: "Reward", title: "Accuracy of sampled responses", unit: "share correct", main: true, rate: true},
		{field: "accuracy_kept", section: "Reward", title: "Accuracy of the groups kept for the update", unit: "share correct", main: true, rate: true},
		{field: "len_mean", section: "Response length", title: "Mean response length", unit: "tokens", main: true},
		{field: "len_max", section: "Response length", title: "Longest response", unit: "tokens"},
		{field: "truncated", section: "Response length", title: "Responses cut at the budget", unit: "share of responses", main: true, rate: true},
		{field: "entropy", section: "Policy", title: "Policy entropy", unit: "nats/token", main: true},
		{field: "kl_ref", section: "Policy", title: "KL to the reference policy", unit: "k3 estimate (nats/token)", main: true},
		{field: "clip_frac", section: "Policy", title: "Clipped fraction", unit: "share of tokens clipped", main: true},
		{field: "logp_gap", section: "Policy", title: "Rollout vs trainer log-prob gap", unit: "mean |Δ log π| (nats/token)", main: true},
		{field: "loss", section: "Losses", title: "Policy loss", unit: "loss", main: true},
		{field: "value_loss", section: "Losses", title: "Critic (value) loss", unit: "loss"},
		{field: "routing_disagreement", section: "Routing", title: "Routing disagreement", unit: "share of (token, layer) whose top-k set changed", main: true},
		{field: "expert_load_entropy", section: "Routing", title: "Expert-load entropy", unit: "entropy of the experts' token shares (nats)", main: true},
		{field: "expert_load_max", section: "Routing", title: "Largest expert load", unit: "share of routed tokens", main: true},
		{field: "router_margin", section: "Routing", title: "Router margin", unit: "gate gap between k-th and next expert"},
		{field: "grad_norm", section: "Optimization", title: "Gradient norm", unit: "global L2 norm", main: true},
		{field: "lr", section: "Optimization", title: "Learning rate", unit: "learning rate"},
		{field: "skipped_updates", section: "Optimization", title: "Skipped updates", unit: "updates skipped (count)"},
		{field: "zero_std_groups", section: "Sampling", title: "Groups with equal rewards", unit: "share of groups (no learning signal)", main: true, rate: true},
		{field: "groups", section: "Sampling", title: "Groups in the update batch", unit: "groups"},
		{field: "tries", section: "Sampling", title: "Sampling rounds (dynamic sampling)", unit: "rounds"},
		{field: "short_batch", section: "Sampling", title: "Short batches", unit: "1 = fewer groups than asked"},
		{field: "gen_s", section: "Time", title: "Generation time per step", unit: "seconds"},
		{field: "update_s", section: "Time", title: "Update time per step", unit: "seconds"},
	},
	partRM: {
		{field: "loss", section: "Loss", title: "Reward-model loss", unit: "loss", main: true},
		{field: "accuracy", section: "Loss", title: "Reward-model accuracy", unit: "share correct", main: true, rate: true},
	},
}

func lookup(p part, field string) (metricInfo, bool) {
	for _, mi := range catalog[p] {
		if mi.field == field {
			return mi, true
		}
	}
	return metricInfo{}, false
}
