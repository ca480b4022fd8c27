package cuda

import "github.com/moerl/moerl/engine"

// The launchers of kernels/routing.cu: the ops RL adds to the model's
// forward and backward (routing replay, the entropy bonus's backward).

// RouterReplay rewrites, in each row whose replay[r·k] is not negative,
// the experts RouterTopK chose with the replayed ones and the weights with
// their renormalised probabilities (kernel router_replay). A replayed id out
// of range or repeated in its row is reported by Sync, as an expert index
// out of range, and leaves that row as RouterTopK wrote it.
func (b *Backend) RouterReplay(weights, experts, probs, replay *engine.Tensor, rows, nExperts, k int) {
	c := b.begin("RouterReplay")
	n := b.routerCheck(c, rows, nExperts, k)
	rk := int64(rows) * int64(k)
	c.f32("weights", weights, rk)
	c.i32("experts", experts, rk)
	c.f32("probs", probs, n)
	c.i32("replay", replay, rk)
	if !b.ok(c) || rows == 0 {
		return
	}
	b.launch("router_replay", dim3{cdiv(rows, 256), 1, 1}, dim3{256, 1, 1}, 0, tensorArg(weights),
		tensorArg(experts), tensorArg(probs), tensorArg(replay), i32Arg(rows), i32Arg(nExperts), i32Arg(k),
		b.statusArg())
}

// EntropyBackward accumulates dlogits += dent·(−p⊙(log p + H)) per row
// (kernel entropy_bwd), given the lse and entropy of the same logits.
func (b *Backend) EntropyBackward(dlogits, dent, logits, lse, ent *engine.Tensor, rows, vocab int) {
	c := b.begin("EntropyBackward")
	n := b.vocabCheck(c, rows, vocab)
	c.f32("dlogits", dlogits, n)
	c.f32("dent", dent, int64(rows))
	c.f32("logits", logits, n)
	c.f32("lse", lse, int64(rows))
	c.f32("ent", ent, int64(rows))
	if !b.ok(c) || n == 0 {
		return
	}
	b.launch("entropy_bwd", dim3{rows, 1, 1}, dim3{256, 1, 1}, 0, tensorArg(dlogits), tensorArg(dent),
		tensorArg(logits), tensorArg(lse), tensorArg(ent), i32Arg(rows), i32Arg(vocab))
}
