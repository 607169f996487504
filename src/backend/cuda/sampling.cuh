// defines: SamplingConfig, sample_enqueue (one token id chosen on the GPU from fp32 logits: greedy,
// repetition penalty, temperature, top-k, top-p, min-p), sampling_scratch_bytes.
//
// HF transformers' logits processors, in their order (runtime/sampler.h is the CPU twin):
// repetition penalty -> temperature -> top-k -> top-p -> min-p -> softmax -> draw. Only the chosen
// id leaves the GPU. The filters become one threshold on the logit: the k-th largest value (top-k),
// the smallest value whose upper tail still holds top_p of the kept mass (top-p), max + ln(min_p)
// (min-p); each found exactly by a 4-pass radix select over the fp32 bits. The draw inverts the
// kept distribution's CDF in vocabulary order at a uniform u supplied by the caller (the host RNG
// state stays with the caller's sampler, so a seed reproduces a run).
#pragma once

#include <cstddef>
#include <cstdint>

#include "backend/cuda/context.cuh"

namespace nibble::cuda {

struct SamplingConfig {
  float temperature = 0.0f;         // <= 0: greedy (argmax, lowest id on ties, as torch.argmax)
  int64_t top_k = 0;                // 0: off
  float top_p = 1.0f;               // 1: off
  float min_p = 0.0f;               // 0: off
  float repetition_penalty = 1.0f;  // 1: off; HF: positive logits / p, negative * p, once per seen id
};

size_t sampling_scratch_bytes(int64_t vocab);

// Writes the chosen id to *out_id: device memory, or mapped pinned host memory (then no copy
// follows the kernel: the id is on the host once the stream has synchronised). logits (vocab) fp32
// or bf16 (logits_bf16), device. seen (n_seen) int32 device ids for the repetition penalty
// (duplicates allowed). uniform in [0, 1) drives the draw (a kernel argument; unused when greedy).
// feed_step: null, or a recorded decode step's inputs {position, token id} (device): the chosen id
// becomes its token and the position advances by one, so that the next replay decodes the id
// without the host. Stream-ordered, no host synchronisation.
void sample_enqueue(Context& ctx, const void* logits, bool logits_bf16, int64_t vocab,
                    const SamplingConfig& cfg, const int32_t* seen, int64_t n_seen, float uniform,
                    int32_t* out_id, Scratch scratch, int32_t* feed_step = nullptr);

}  // namespace nibble::cuda
