package algo

import (
	"encoding/binary"
	"fmt"
	"hash/fnv"
	"math"
	"math/rand/v2"
	"runtime"
	"testing"
)

// goldenBatch is a batch with everything any preset reads: ragged masks,
// a response masked out, a truncated one, groups of 4, rewards, values.
func goldenBatch(cfg Config, seed uint64) *Batch {
	rng := rand.New(rand.NewPCG(seed, 7))
	b := randomBatch(rng, cfg, 8, 6)
	b.Rewards, b.Groups, b.Lengths = make([]float64, b.B), make([]int, b.B), make([]int, b.B)
	b.OldValues = make([]float32, b.B*b.L)
	for i := range b.B {
		b.Rewards[i] = float64(rng.IntN(3)) / 2
		b.Groups[i] = i / 4
		for t := range b.L {
			if b.Mask[i*b.L+t] != 0 {
				b.Lengths[i]++
			}
			b.OldValues[i*b.L+t] = float32(rng.NormFloat64())
		}
	}
	return b
}

// hashFloats folds the bits of every value into h, so that a single
// changed bit changes the digest.
func hashBits(vals ...any) uint64 {
	h := fnv.New64a()
	var buf [8]byte
	put := func(u uint64) { binary.LittleEndian.PutUint64(buf[:], u); h.Write(buf[:]) }
	for _, v := range vals {
		switch x := v.(type) {
		case float64:
			put(math.Float64bits(x))
		case int:
			put(uint64(x))
		case []float32:
			for _, f := range x {
				put(uint64(math.Float32bits(f)))
			}
		default:
			panic(fmt.Sprintf("hashBits: %T", v))
		}
	}
	return h.Sum64()
}

// goldenDigest runs ComputeAdvantages and PolicyLoss of cfg on a fixed
// batch and digests every bit of their outputs.
func goldenDigest(t *testing.T, cfg Config, seed uint64) uint64 {
	t.Helper()
	b := goldenBatch(cfg, seed)
	adv, ret, err := ComputeAdvantages(cfg, b)
	if err != nil {
		t.Fatal(err)
	}
	// Keep the random per-token advantages for token-level terms, so that
	// the clip sees both signs; sequence-level terms take the estimator's.
	if cfg.PolicyLoss == OMD {
		b.Advantages = adv
	}
	loss, grad, st, err := PolicyLoss(cfg, b)
	if err != nil {
		t.Fatal(err)
	}
	return hashBits(adv, ret, loss, grad, st.PolicyLoss, st.KLLoss, st.KLRef, st.ApproxKL, st.ClipFrac,
		st.DualClipFrac, st.RatioMean, st.RatioMin, st.RatioMax, st.Tokens, st.Sequences)
}

// TestGoldenBits pins every bit of each preset's advantages, loss,
// gradient and statistics (and of some variants) to their values before
// rl/algo's parts were registered in one table: the refactor and every
// new option must leave them bit for bit as they were. The digests hold
// on amd64; another architecture may fuse multiply-adds differently.
func TestGoldenBits(t *testing.T) {
	if runtime.GOARCH != "amd64" {
		t.Skipf("digests are of amd64 arithmetic, not %s", runtime.GOARCH)
	}
	type variant struct {
		preset string
		sets   []string
	}
	cases := []struct {
		v    variant
		want uint64
	}{
		{variant{"ppo", nil}, 0x78a395bee2e54850},
		{variant{"grpo", nil}, 0x4ed9bb873f0c1b9e},
		{variant{"dapo", nil}, 0x7b2d67c8799bc5d7},
		{variant{"omd", nil}, 0x7ffda98717230e28},
		{variant{"drgrpo", nil}, 0x1e4c5f5ea50deaae},
		{variant{"rloo", nil}, 0x96daaf5d7279d78d},
		{variant{"reinforce++", nil}, 0xd65bc954acac1457},
		{variant{"grpo", []string{"dual_clip=3", "overlong_filter=true"}}, 0x8f33a74e9589bdf6},
		{variant{"grpo", []string{"kl_estimator=k2", "aggregation=seq-mean-token-sum"}}, 0x7f95b4199addadec},
		{variant{"dapo", []string{"advantage=reinforce++-baseline", "kl_placement=reward", "kl_coef=0.1"}}, 0x937275aa081b33f4},
		{variant{"omd", []string{"kl_placement=loss", "kl_coef=0.2", "aggregation=token-mean"}}, 0x2e0ded3f1e7d7bea},
		{variant{"drgrpo", []string{"advantage=group", "kl_placement=loss", "kl_estimator=k1", "kl_coef=0.3"}}, 0x6aff3a499f7d387e},
	}
	for _, tc := range cases {
		name := fmt.Sprintf("%s%v", tc.v.preset, tc.v.sets)
		cfg, err := Preset(tc.v.preset)
		if err != nil {
			t.Fatal(err)
		}
		for _, kv := range tc.v.sets {
			if err := cfg.Apply(kv); err != nil {
				t.Fatal(err)
			}
		}
		got := goldenDigest(t, cfg, 11)
		if got != tc.want {
			t.Errorf("%s: digest %#x, want %#x", name, got, tc.want)
		}
	}
}
