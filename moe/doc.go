// Package moe is moerl's model: a Qwen3-MoE style decoder-only transformer
// with hand-written forward and backward passes, a KV cache and a batched
// sampler, computed on any engine.Backend.
//
// One layer, in order (forward.go reads the same way):
//
//	h  = RMSNorm(x)                       pre-norm
//	q, k, v = h·Wq, h·Wk, h·Wv
//	q, k = RoPE(RMSNorm_head(q)), RoPE(RMSNorm_head(k))
//	x  = x + Attention(q, k, v)·Wo        causal, multi-head
//	h  = RMSNorm(x)
//	p  = softmax(h·Wr); top-k experts, weights renormalised to sum 1
//	x  = x + Σ_j w_j · W2_e(silu(h·W1_e) ⊙ h·W3_e)   SwiGLU experts
//
// then a final RMSNorm and an untied LM head. A dense-FFN option replaces the
// router and experts by one SwiGLU block. A Switch-style load-balancing loss
// E·Σ_e f_e·P_e (f_e the share of routed slots, P_e the mean router
// probability) is added with coefficient Config.AuxLossCoef, and ST-MoE's
// router z-loss mean_tokens (log Σ_e exp z_e)² with Config.RouterZLossCoef.
//
// For RL: the sampler can record every token's experts per layer
// (SampleOptions.RecordRouting, Sequence.Routing) and a training forward
// can replay them (ForwardOptions.Replay, routing replay R3); the backward
// can take a gradient per token's entropy besides its log-prob
// (BackwardEntropy, the entropy bonus).
package moe
