// defines: Engine (a loaded model + backend + one sequence's KV cache) and EngineOptions.
//
// The Engine is the thin layer the runtime (sampler, chat session, generate/chat commands) drives:
// it appends tokens to one sequence and returns logits. Sampling and chat live in runtime/*.
// Abstract so that tests can fake it; Engine::load builds the real one (model/qwen3 over a Backend).
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "core/error.h"
#include "format/hf_config.h"
#include "tools/telemetry.h"

namespace nibble {

struct SamplerParams;

struct EngineOptions {
  std::string device = "cpu";               // "cpu" | "cuda"
  std::optional<double> gpu_mem_budget_gb;  // cuda: refuse to load when the memory plan exceeds it
  bool kv_fp8 = false;                      // cuda: FP8 E4M3 KV cache (the CPU refuses it)
  int64_t context_length = 0;               // KV capacity in tokens; 0 = min(max_position_embeddings, 4096)
  int threads = 0;                          // 0 = hardware concurrency
};

class Engine {
 public:
  virtual ~Engine() = default;

  // Loads config.json + safetensors from `model_dir` (Qwen3, Qwen2 or Llama). Throws Error on a
  // missing file or tensor, a mis-shaped tensor, an unknown architecture or device, or (cuda) a
  // memory plan over the budget or the free GPU memory. On cuda the plan is printed to stderr.
  static std::unique_ptr<Engine> load(const std::filesystem::path& model_dir, const EngineOptions& opts);

  virtual const ModelConfig& config() const = 0;
  virtual int64_t context_length() const = 0;
  virtual int64_t position() const = 0;  // tokens now in the KV cache

  // Appends tokens at [position(), position()+n) and returns fp32 logits (vocab_size) of the last
  // one; the span stays valid until the next call. Throws Error (nothing changed) if
  // position()+n > context_length(), n == 0, or an id is outside [0, vocab).
  virtual std::span<const float> forward(std::span<const int32_t> tokens) = 0;

  // Same, returning logits of every token, (n, vocab) row-major — for parity tests.
  virtual std::vector<float> forward_all(std::span<const int32_t> tokens) = 0;

  // Appends tokens like forward() and picks the next id on the device from the last logits
  // (runtime/sampler.h semantics; `uniform` in [0, 1) drives the draw, `seen` the repetition
  // penalty): only the id crosses to the host. nullopt, with nothing changed, when the backend
  // cannot sample (the CPU: use forward() and a Sampler). last logits are not kept.
  // The backend's planned memory for the telemetry (tools/telemetry.h): used = handed out of the
  // arena, peak = the arena, which is allocated once. Empty where nothing is planned (CPU).
  virtual PlannerNumbers planner_memory() const { return {}; }

  virtual bool samples_on_device() const { return false; }  // forward_sample() returns ids
  virtual std::optional<int32_t> forward_sample(std::span<const int32_t> /*tokens*/,
                                                const SamplerParams& /*params*/,
                                                std::span<const int32_t> /*seen*/, double /*uniform*/) {
    return std::nullopt;
  }

  // Pipelined decoding, where the backend samples on the device and can feed the drawn id to the
  // next recorded step (CUDA with graphs): decode_begin appends one token at position() and
  // enqueues its step and the draw of the id after it, without waiting; `token` comes from the
  // host, or (nullopt) is the id the previous decode_begin draws, which the device feeds to this
  // step. decode_end waits for the oldest begun step's id. At most two steps outstanding; every
  // begun step must be ended. The ids are forward_sample's, one step at a time; no repetition
  // penalty (it needs every id on the host before the next draw): can_pipeline says false then.
  virtual bool can_pipeline(const SamplerParams& /*params*/) const { return false; }
  virtual void decode_begin(std::optional<int32_t> /*token*/, const SamplerParams& /*params*/,
                            double /*uniform*/) {
    fail("pipelined decoding needs a backend that samples on the device");
  }
  virtual int32_t decode_end() { fail("pipelined decoding needs a backend that samples on the device"); }

  // Forgets KV entries at positions >= n (n <= position()); position() becomes n.
  virtual void truncate(int64_t n) = 0;
};

}  // namespace nibble
