// Package kernels holds moerl's CUDA kernels as PTX, built ahead of time from
// the CUDA C sources beside this file and embedded in the binary, so that
// nothing at run time needs nvcc or NVRTC: the CUDA driver JIT-compiles the
// PTX for the GPU it finds (engine/cuda loads it).
//
// Each kernels/NAME.cu is one family of ops and builds to ptx/NAME.ptx with
// `make ptx` (kernels/ptx.mk); `make ptx-check` verifies that the committed
// PTX matches the sources. Modules lists every module and its entry points;
// a test holds it equal to the .entry declarations of the embedded PTX, and
// Entries parses those declarations (names, parameter types and launch
// bounds) so that engine/cuda can check every launch's arguments against the
// kernel it calls.
package kernels

import (
	"bytes"
	"embed"
	"fmt"
	"strconv"
	"strings"
)

//go:embed ptx/*.ptx
var ptxFiles embed.FS

// Module is one compiled .cu file: its name (the file name without the
// extension) and the kernels it defines.
type Module struct {
	Name    string
	Kernels []string
}

// Modules lists every embedded module and its kernels.
var Modules = []Module{
	{"adamw", []string{"adamw"}},
	{"attention", []string{
		"attn_bwd_delta",
		"attn_fwd_d32", "attn_bwd_dkdv_d32", "attn_bwd_dq_d32", "attn_decode_d32",
		"attn_fwd_d64", "attn_bwd_dkdv_d64", "attn_bwd_dq_d64", "attn_decode_d64",
		"attn_fwd_d128", "attn_bwd_dkdv_d128", "attn_bwd_dq_d128", "attn_decode_d128",
	}},
	{"cast", []string{"cast_f32_bf16", "cast_bf16_f32"}},
	{"embedding", []string{"embedding_fwd", "embedding_bwd_apply"}},
	{"gather", []string{"gather_fwd", "gather_bwd", "combine_fwd", "combine_bwd", "combine_bwd_d16", "scatter_rows"}},
	{"gemm", []string{
		"sgemm_tiled", "sgemm_tiled_tf32", "sgemm_tiled_bf16",
		"sgemm_grouped", "sgemm_grouped_tf32", "sgemm_grouped_bf16",
		"sgemm_grouped_t", "sgemm_grouped_t_tf32", "sgemm_grouped_t_bf16",
		"sgemm_grouped_swiglu", "sgemm_grouped_swiglu_tf32", "sgemm_grouped_swiglu_bf16",
		"sgemm_grouped_swiglu_bwd", "sgemm_grouped_swiglu_bwd_tf32", "sgemm_grouped_swiglu_bwd_bf16",
		"sgemm_grouped_w16", "sgemm_grouped_w16_tf32", "sgemm_grouped_w16_bf16",
		"sgemm_grouped_swiglu_w16", "sgemm_grouped_swiglu_w16_tf32", "sgemm_grouped_swiglu_w16_bf16",
		"sgemm_grouped_a16_w16_bf16", "sgemm_grouped_swiglu_w16_s16_bf16",
		"sgemm_grouped_t_a16_bf16", "sgemm_grouped_t_b16_bf16", "sgemm_grouped_t_a16_b16_bf16",
		"sgemm_grouped_swiglu_bwd_a16_w16_d16_bf16",
		"sgemm_grouped_swiglu_w16_g16_s16_bf16", "sgemm_grouped_swiglu_bwd_a16_w16_g16_d16_bf16",
	}},
	{"logprob", []string{"logprob_fwd", "logprob_bwd", "logprob_fused", "entropy"}},
	{"reduce", []string{"add_f32", "scale_f32", "sumsq_partial", "sumsq_final"}},
	{"rmsnorm", []string{"rmsnorm_fwd", "rmsnorm_bwd", "rmsnorm_dw_reduce", "residual_rmsnorm"}},
	{"rope", []string{"rope_fwd", "rope_bwd"}},
	{"router", []string{"router_topk_fwd", "router_topk_bwd", "softmax_bwd", "dispatch_offsets", "dispatch_finalize", "router_load"}},
	{"routing", []string{"router_replay", "entropy_bwd"}},
	{"sampling", []string{"sample_rows"}},
	{"sort", []string{"sort_keys", "sort_count", "sort_scan", "sort_place"}},
	{"swiglu", []string{"swiglu_fwd", "swiglu_bwd"}},
}

// PTX returns the PTX text of the named module.
func PTX(module string) ([]byte, error) {
	b, err := ptxFiles.ReadFile("ptx/" + module + ".ptx")
	if err != nil {
		return nil, fmt.Errorf("kernels: no embedded PTX module %q: %w", module, err)
	}
	return b, nil
}

// ParamType is the type of a kernel parameter as PTX declares it.
type ParamType uint8

// PTX parameter types. A pointer is a U64, as is a 64-bit integer.
const (
	U32 ParamType = iota + 1 // .u32, .s32, .b32: int, unsigned
	U64                      // .u64, .s64, .b64: pointers, long long
	F32                      // .f32: float
	F64                      // .f64: double
)

func (p ParamType) String() string {
	switch p {
	case U32:
		return "u32"
	case U64:
		return "u64"
	case F32:
		return "f32"
	case F64:
		return "f64"
	}
	return "param(" + strconv.Itoa(int(p)) + ")"
}

// Size is the parameter's size in bytes.
func (p ParamType) Size() int {
	if p == U64 || p == F64 {
		return 8
	}
	return 4
}

// Entry is one kernel entry point of a PTX module.
type Entry struct {
	Name       string
	Params     []ParamType
	MaxThreads int // product of .maxntid (from __launch_bounds__), 0 when absent
}

// Entries parses the .entry declarations of a PTX text: each kernel's name,
// parameter types and thread limit.
func Entries(ptx []byte) ([]Entry, error) {
	var out []Entry
	lines := strings.Split(string(bytes.ReplaceAll(ptx, []byte("\r\n"), []byte("\n"))), "\n")
	for i := 0; i < len(lines); i++ {
		line := strings.TrimSpace(lines[i])
		rest, ok := cutEntry(line)
		if !ok {
			continue
		}
		name, params, _ := strings.Cut(rest, "(")
		name = strings.TrimSpace(name)
		if name == "" {
			return nil, fmt.Errorf("ptx line %d: .entry without a name", i+1)
		}
		e := Entry{Name: name}
		// Parameters follow, one per line, until the closing parenthesis.
		params = strings.TrimSpace(params)
		closed := strings.HasPrefix(params, ")")
		for !closed {
			i++
			if i >= len(lines) {
				return nil, fmt.Errorf("ptx: .entry %s: parameter list not closed", name)
			}
			p := strings.TrimSpace(lines[i])
			if p == "" {
				continue
			}
			if strings.HasPrefix(p, ")") {
				closed = true
				break
			}
			t, err := paramType(p)
			if err != nil {
				return nil, fmt.Errorf("ptx line %d: .entry %s: %w", i+1, name, err)
			}
			e.Params = append(e.Params, t)
			if strings.HasSuffix(p, ")") {
				closed = true
			}
		}
		// Directives between the parameters and the body.
		for i+1 < len(lines) {
			d := strings.TrimSpace(lines[i+1])
			if !strings.HasPrefix(d, ".") {
				break
			}
			i++
			if v, ok := strings.CutPrefix(d, ".maxntid"); ok {
				n, err := product(v)
				if err != nil {
					return nil, fmt.Errorf("ptx line %d: .entry %s: .maxntid: %w", i+1, name, err)
				}
				e.MaxThreads = n
			}
		}
		out = append(out, e)
	}
	return out, nil
}

// cutEntry returns what follows ".entry" in a declaration line.
func cutEntry(line string) (string, bool) {
	for _, prefix := range []string{".visible .entry ", ".entry ", ".weak .entry "} {
		if rest, ok := strings.CutPrefix(line, prefix); ok {
			return rest, true
		}
	}
	return "", false
}

// paramType reads a ".param .u64 name," line.
func paramType(line string) (ParamType, error) {
	f := strings.Fields(strings.TrimRight(line, ",)"))
	if len(f) < 3 || f[0] != ".param" {
		return 0, fmt.Errorf("unexpected parameter line %q", line)
	}
	switch f[1] {
	case ".u32", ".s32", ".b32":
		return U32, nil
	case ".u64", ".s64", ".b64":
		return U64, nil
	case ".f32":
		return F32, nil
	case ".f64":
		return F64, nil
	}
	return 0, fmt.Errorf("unsupported parameter type %s in %q", f[1], line)
}

// product multiplies the comma-separated integers of a directive's operands.
func product(s string) (int, error) {
	n := 1
	for _, f := range strings.Split(s, ",") {
		v, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || v <= 0 || v > 1024 {
			return 0, fmt.Errorf("bad operand %q", strings.TrimSpace(f))
		}
		n *= v
	}
	return n, nil
}
