// The Engine: a Qwen3Model over a Backend, with the KV cache of one sequence. Inputs are checked
// here, before anything changes, so that a bad request leaves the sequence as it was.
#include "runtime/engine.h"

#include <fmt/format.h>

#include <algorithm>
#include <optional>

#include "backend/backend.h"
#include "core/error.h"
#include "format/safetensors.h"
#include "model/qwen3.h"
#include "quant/nvfp4_checkpoint.h"
#include "runtime/sampler.h"

namespace nibble {

namespace {

constexpr int64_t kDefaultContext = 4096;
constexpr int64_t kMaxChunk = 2048;  // tokens per model forward; longer prompts run in chunks

class ModelEngine final : public Engine {
 public:
  ModelEngine(const std::filesystem::path& dir, const EngineOptions& opts) {
    if (!std::filesystem::is_directory(dir)) fail("model directory {} does not exist", dir.string());
    config_ = ModelConfig::load(dir);
    store_ = WeightStore::open_dir(dir);
    const QuantConfig quant = read_quant_config(dir, config_);
    // Every problem at once (missing tensors, wrong shapes) before the first one stops the load.
    check_weights(
        config_, store_, [&](const ExpectedTensor& e, const WeightStore& s) -> std::optional<std::string> {
          const std::string prefix = e.name.substr(0, e.name.rfind(".weight"));
          const TensorInfo* t = s.find(e.name);
          if (!(t != nullptr && t->dtype == DType::U8) && s.find(prefix + ".weight_packed") == nullptr) {
            return std::nullopt;  // dense: checked by check_weights itself
          }
          try {
            load_linear_weight(s, prefix, e.shape[0], e.shape[1], quant);
            return std::string();
          } catch (const Error& err) {
            return std::string(err.what());
          }
        });
    const ModelWeights host = load_model_weights(store_, config_, quant);

    const int64_t max_pos = config_.max_position_embeddings;
    context_ = opts.context_length > 0 ? opts.context_length
                                       : (max_pos > 0 ? std::min(max_pos, kDefaultContext) : kDefaultContext);
    if (opts.context_length < 0) fail("context length must be positive, found {}", opts.context_length);
    if (max_pos > 0 && context_ > max_pos) {
      fail("context length {} exceeds the model's max_position_embeddings {} ({})", context_, max_pos,
           (dir / "config.json").string());
    }

    backend_ = make_backend(opts.device, BackendOptions{opts.threads, opts.gpu_mem_budget_gb, opts.kv_fp8});
    const int64_t max_tokens = std::min(context_, kMaxChunk);
    // CUDA plans weights + KV cache + activations + workspaces and allocates them at once.
    const std::string plan = backend_->prepare_model(config_, host, context_, max_tokens);
    if (!plan.empty())
      fmt::print(stderr, "nibble: {} on {}\n{}", dir.filename().string(), backend_->name(), plan);
    model_ =
        std::make_unique<Qwen3Model>(*backend_, config_, upload_model_weights(*backend_, host), max_tokens);
    cache_ = model_->make_kv_cache(context_);
    last_logits_.resize(static_cast<size_t>(config_.vocab_size));
  }

  const ModelConfig& config() const override { return config_; }
  int64_t context_length() const override { return context_; }
  int64_t position() const override { return position_; }

  std::span<const float> forward(std::span<const int32_t> tokens) override {
    check(tokens);
    forward_chunks(tokens, last_logits_);
    return last_logits_;
  }

  bool samples_on_device() const override { return backend_->samples_on_device(); }

  PlannerNumbers planner_memory() const override {
    const auto plan = backend_->planned_memory();
    if (!plan) return {};
    return PlannerNumbers{plan->used_bytes, plan->arena_bytes};
  }

  std::optional<int32_t> forward_sample(std::span<const int32_t> tokens, const SamplerParams& params,
                                        std::span<const int32_t> seen, double uniform) override {
    if (!backend_->samples_on_device()) return std::nullopt;
    check(tokens);
    forward_chunks(tokens, std::span<float>());  // the last logits stay on the backend
    return backend_->sample(model_->device_logits(1), params, seen, uniform);
  }

  bool can_pipeline(const SamplerParams& params) const override {
    return backend_->can_feed_steps() && params.repetition_penalty == 1.0f;
  }

  void decode_begin(std::optional<int32_t> token, const SamplerParams& params, double uniform) override {
    if (!can_pipeline(params)) fail("pipelined decoding is not available here (see Engine::can_pipeline)");
    if (token) {
      check(std::span<const int32_t>(&*token, 1));
      model_->forward(std::span<const int32_t>(&*token, 1), position_, cache_, 1, std::span<float>());
    } else {
      if (position_ + 1 > context_)
        fail("a token at position {} needs {} positions, more than the context length {}", position_,
             position_ + 1, context_);
      model_->forward_fed(position_, cache_);
    }
    ++position_;
    backend_->sample_begin(model_->device_logits(1), params, uniform, /*feed_step=*/true);
  }

  int32_t decode_end() override { return backend_->sample_end(); }

  std::vector<float> forward_all(std::span<const int32_t> tokens) override {
    check(tokens);
    const int64_t n = static_cast<int64_t>(tokens.size()), vocab = config_.vocab_size;
    std::vector<float> logits(static_cast<size_t>(n * vocab));
    for (int64_t done = 0; done < n;) {
      const int64_t chunk = std::min(model_->max_tokens(), n - done);
      model_->forward(tokens.subspan(static_cast<size_t>(done), static_cast<size_t>(chunk)), position_,
                      cache_, chunk,
                      std::span<float>(logits).subspan(static_cast<size_t>(done * vocab),
                                                       static_cast<size_t>(chunk * vocab)));
      position_ += chunk;
      done += chunk;
    }
    std::copy(logits.end() - vocab, logits.end(), last_logits_.begin());
    return logits;
  }

  void truncate(int64_t n) override {
    if (n < 0 || n > position_) fail("cannot truncate the KV cache to {} tokens: it holds {}", n, position_);
    position_ = n;  // entries at positions >= n are never read again before being overwritten
  }

 private:
  // Runs `tokens` in chunks of at most max_tokens() and writes the last token's logits to
  // `last_logits` (vocab), or leaves them on the backend (model_->device_logits) when it is empty.
  void forward_chunks(std::span<const int32_t> tokens, std::span<float> last_logits) {
    const int64_t n = static_cast<int64_t>(tokens.size());
    for (int64_t done = 0; done < n;) {
      const int64_t chunk = std::min(model_->max_tokens(), n - done);
      const bool last = done + chunk == n;
      model_->forward(tokens.subspan(static_cast<size_t>(done), static_cast<size_t>(chunk)), position_,
                      cache_, last ? 1 : 0, last ? last_logits : std::span<float>());
      position_ += chunk;
      done += chunk;
    }
  }

  void check(std::span<const int32_t> tokens) const {
    const int64_t n = static_cast<int64_t>(tokens.size());
    if (n == 0) fail("forward needs at least one token");
    if (position_ + n > context_) {
      fail("{} tokens at position {} need {} positions, more than the context length {}", n, position_,
           position_ + n, context_);
    }
    for (size_t i = 0; i < tokens.size(); ++i) {
      if (tokens[i] < 0 || tokens[i] >= config_.vocab_size) {
        fail("token id {} at index {} is outside the vocabulary [0, {})", tokens[i], i, config_.vocab_size);
      }
    }
  }

  ModelConfig config_;
  WeightStore store_;  // the mmap the CPU weights point into: outlives model_
  std::unique_ptr<Backend> backend_;
  std::unique_ptr<Qwen3Model> model_;
  KvCache cache_;
  int64_t context_ = 0;
  int64_t position_ = 0;
  std::vector<float> last_logits_;
};

}  // namespace

std::unique_ptr<Engine> Engine::load(const std::filesystem::path& model_dir, const EngineOptions& opts) {
  return std::make_unique<ModelEngine>(model_dir, opts);
}

}  // namespace nibble
