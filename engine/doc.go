// Package engine holds what every part of moerl computes with: the Tensor,
// the Backend interface that the CPU and CUDA backends implement, seeded RNG
// streams, learning-rate schedules and the checkpoint format.
//
// Conventions shared by every Backend:
//
//   - Tensors are flat, row-major buffers; an op is told its shapes as ints.
//   - Backward ops accumulate (+=) into every gradient they write, parameter
//     and activation gradients alike; the caller zeroes gradients before a
//     backward pass. The exceptions are the in-place transforms (RoPE and its
//     backward), which say so.
//   - Results do not depend on the number of threads: every output element
//     and every reduction is computed in a fixed order.
package engine
