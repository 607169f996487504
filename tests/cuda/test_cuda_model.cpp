// Whole-model parity of the CUDA backend:
//   - BF16 (and F32 checkpoints, uploaded as BF16): the tiny HF models of tests/fixtures/models
//     against HF's float64 logits and greedy ids; the trained llama2.c model (aidreams260K) against
//     HF's greedy ids;
//   - NVFP4: the same models with every linear quantised (quant/nvfp4.h, ModelOpt rounding), the
//     CUDA backend against the CPU backend on identical weights, and the CPU backend's greedy ids
//     against the generator's (PyTorch float64 on the same NVFP4 weights).
// The model code is model/qwen3 over the Backend; the CUDA backend plans its memory first.
//
// Tolerance. Activations are bf16 on the GPU (HF's own bf16 inference rounds the same places):
// each op's output carries a relative error up to 2^-9, a few dozen roundings over 2-3 layers.
// Logits (computed and returned in fp32) are compared by NMSE against the reference: the bound
// kLogitNmse = 1e-3 is far below a real mistake (a wrong RoPE pair or a missing norm gives NMSE
// ~ 0.1-1); observed values are printed. Greedy decoding is exact: teacher forced (the GPU reads
// the reference's sequence) every step must pick the reference's id, and free running the 32 ids
// must equal the reference's. That is a fair demand because the fixtures are built for it
// (scripts/gen_model_fixtures.py): every step of the float64 greedy path, and of the NVFP4 one,
// wins by at least max(1, 4 x the largest |logit| error of HF's bf16 inference of the same
// model), while two logits that each move by at most the noise swap only below 2x. The minimum
// reference margin and the GPU's noise (its largest |logit - reference| on the prompt) are
// printed, so that a failure says whether the margin or the engine moved.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "backend/cpu/cpu_backend.h"
#include "cuda/cuda_test_util.h"
#include "format/safetensors.h"
#include "model/qwen3.h"
#include "quant/nvfp4.h"
#include "quant/nvfp4_checkpoint.h"
#include "runtime/engine.h"
#include "runtime/generate.h"
#include "runtime/sampler.h"
#include "runtime/stop.h"
#include "support/test_support.h"

namespace nibble {
namespace {

constexpr double kLogitNmse = 1e-3;
constexpr int kGreedy = 32;

std::vector<double> as_doubles(const TensorInfo& t) {
  std::vector<double> v(static_cast<size_t>(t.numel()));
  for (size_t i = 0; i < v.size(); ++i) {
    if (t.dtype == DType::F64)
      v[i] = reinterpret_cast<const double*>(t.data)[i];
    else if (t.dtype == DType::F32)
      v[i] = reinterpret_cast<const float*>(t.data)[i];
    else if (t.dtype == DType::I64)
      v[i] = static_cast<double>(reinterpret_cast<const int64_t*>(t.data)[i]);
  }
  return v;
}

struct Reference {
  std::vector<int32_t> prompt, greedy_ids;
  std::vector<int32_t> nvfp4_greedy_ids;             // the same model with NVFP4 linears (float64)
  std::vector<double> prompt_logits, greedy_logits;  // (P, V), (G, V)
};

Reference load_reference(const std::filesystem::path& dir) {
  const SafetensorsFile f = SafetensorsFile::open(dir / "reference.safetensors");
  Reference r;
  for (double d : as_doubles(*f.find("input_ids"))) r.prompt.push_back(static_cast<int32_t>(d));
  for (double d : as_doubles(*f.find("greedy_ids"))) r.greedy_ids.push_back(static_cast<int32_t>(d));
  if (const TensorInfo* q = f.find("nvfp4_greedy_ids"))
    for (double d : as_doubles(*q)) r.nvfp4_greedy_ids.push_back(static_cast<int32_t>(d));
  r.prompt_logits = as_doubles(*f.find("prompt_logits"));
  r.greedy_logits = as_doubles(*f.find("greedy_logits"));
  return r;
}

std::vector<std::filesystem::path> model_dirs() {
  std::vector<std::filesystem::path> dirs;
  const auto root = test::data_dir() / "models";
  if (std::filesystem::is_directory(root))
    for (const auto& e : std::filesystem::directory_iterator(root))
      if (std::filesystem::exists(e.path() / "reference.safetensors")) dirs.push_back(e.path());
  std::sort(dirs.begin(), dirs.end());
  return dirs;
}

int32_t argmax(std::span<const float> v) {
  return static_cast<int32_t>(std::max_element(v.begin(), v.end()) - v.begin());
}

template <typename R>
double nmse_vs(std::span<const float> got, const R& ref) {
  double num = 0, den = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    num += (got[i] - double(ref[i])) * (got[i] - double(ref[i]));
    den += double(ref[i]) * ref[i];
  }
  return num / den;
}

// A model on one backend with planned memory (CUDA) and its KV cache.
struct Runner {
  std::unique_ptr<Backend> backend;
  std::unique_ptr<Qwen3Model> model;
  KvCache cache;
  int64_t vocab = 0;
  std::string plan;

  Runner(std::unique_ptr<Backend> b, const ModelConfig& config, const ModelWeights& host, int64_t context)
      : backend(std::move(b)), vocab(config.vocab_size) {
    const int64_t max_tokens = std::min<int64_t>(context, 512);
    if (auto* g = dynamic_cast<CudaBackend*>(backend.get()))
      plan = g->prepare_model(config, host, context, max_tokens);
    model = std::make_unique<Qwen3Model>(*backend, config, upload_model_weights(*backend, host), max_tokens);
    cache = model->make_kv_cache(context);
  }
  std::vector<float> forward(std::span<const int32_t> ids, int64_t pos0, int64_t rows) {
    std::vector<float> out(static_cast<size_t>(rows * vocab));
    model->forward(ids, pos0, cache, rows, out);
    return out;
  }
  // Prompt, then `steps` greedy tokens one at a time. Returns ids and the logits each came from.
  std::pair<std::vector<int32_t>, std::vector<float>> greedy(const std::vector<int32_t>& prompt, int steps) {
    std::vector<int32_t> ids;
    std::vector<float> rows;
    std::vector<float> logits = forward(prompt, 0, 1);
    int64_t pos = static_cast<int64_t>(prompt.size());
    for (int s = 0; s < steps; ++s) {
      rows.insert(rows.end(), logits.begin(), logits.end());
      ids.push_back(argmax(logits));
      if (s + 1 < steps) logits = forward(std::span<const int32_t>(&ids.back(), 1), pos++, 1);
    }
    return {ids, rows};
  }
};

std::unique_ptr<Backend> gpu_backend() { return std::make_unique<CudaBackend>(CudaBackendOptions{}); }

// Greedy agreement with a reference decoding `want` whose logit rows are `ref_rows` (G, V):
// teacher forced, every step must pick the reference's id; free running, the G ids must equal
// the reference's. `noise` is the GPU's largest |logit - reference| on the prompt. Prints one line.
template <typename T>
void check_greedy(Runner& teacher, Runner& free_run, const std::vector<int32_t>& prompt,
                  const std::vector<int32_t>& want, const std::vector<T>& ref_rows, double noise,
                  const std::string& label) {
  const int64_t V = teacher.vocab, G = static_cast<int64_t>(want.size());
  std::vector<int32_t> seq = prompt;
  seq.insert(seq.end(), want.begin(), want.end() - 1);
  const std::vector<float> rows = teacher.forward(seq, 0, G);
  double min_margin = INFINITY;
  int teacher_same = 0;
  for (int64_t s = 0; s < G; ++s) {
    double a = -INFINITY, b = -INFINITY;
    for (int64_t j = 0; j < V; ++j) {
      const double x = ref_rows[s * V + j];
      if (x > a)
        b = a, a = x;
      else if (x > b)
        b = x;
    }
    min_margin = std::min(min_margin, a - b);
    const int32_t got = argmax(std::span<const float>(rows.data() + s * V, V));
    teacher_same += got == want[s];
    EXPECT_EQ(got, want[s]) << label << ": teacher-forced step " << s << " (reference margin " << a - b
                            << ", noise " << noise << ")";
  }
  const auto greedy = free_run.greedy(prompt, static_cast<int>(G));
  const std::vector<int32_t>& ids = greedy.first;
  size_t same = 0;
  while (same < ids.size() && ids[same] == want[same]) ++same;
  EXPECT_EQ(ids, want) << label << ": free-running greedy ids (min reference margin " << min_margin
                       << ", noise " << noise << ")";
  std::printf(
      "  %-30s greedy: %zu/%lld free-running, %d/%lld teacher-forced ids equal; min ref margin %.3g "
      "= %.1fx noise %.3g\n",
      label.c_str(), same, static_cast<long long>(G), teacher_same, static_cast<long long>(G), min_margin,
      min_margin / noise, noise);
}

TEST(CudaModel, HfFixturesBf16) {
  NIBBLE_REQUIRE_GPU();
  const auto dirs = model_dirs();
  ASSERT_GE(dirs.size(), 7u) << "tests/fixtures/models is missing (tests/fixtures/GENERATED.md)";
  for (const auto& dir : dirs) {
    SCOPED_TRACE(dir.filename().string());
    const ModelConfig config = ModelConfig::load(dir);
    const WeightStore store = WeightStore::open_dir(dir);
    const ModelWeights host = load_model_weights(store, config, read_quant_config(dir, config));
    const Reference ref = load_reference(dir);

    Runner gpu(gpu_backend(), config, host, 128);
    const std::vector<float> prompt = gpu.forward(ref.prompt, 0, static_cast<int64_t>(ref.prompt.size()));
    const double e_prompt = nmse_vs(std::span<const float>(prompt), ref.prompt_logits);
    double worst = 0;
    for (size_t i = 0; i < prompt.size(); ++i)
      worst = std::max(worst, std::abs(prompt[i] - ref.prompt_logits[i]));
    EXPECT_LT(e_prompt, kLogitNmse);
    std::printf("  %-30s prompt logits NMSE %.2e, max|diff| %.3g\n",
                (dir.filename().string() + " BF16 vs HF").c_str(), e_prompt, worst);
    Runner teacher(gpu_backend(), config, host, 128), free_run(gpu_backend(), config, host, 128);
    check_greedy(teacher, free_run, ref.prompt, ref.greedy_ids, ref.greedy_logits, worst,
                 dir.filename().string() + " BF16");
  }
}

// The trained llama2.c model: HF's 127 greedy ids after BOS (hf_greedy_ids.txt). 32 must match;
// the count over all 127 is printed.
TEST(CudaModel, Llama2cGreedy) {
  NIBBLE_REQUIRE_GPU();
  const auto dir = test::data_dir() / "llama2c_aidreams260K" / "hf";
  std::ifstream f(dir / "hf_greedy_ids.txt");
  std::vector<int32_t> ids;
  std::string tok;
  while (std::getline(f, tok, ',')) ids.push_back(std::stoi(tok));
  ASSERT_GT(ids.size(), 33u);
  const ModelConfig config = ModelConfig::load(dir);
  const WeightStore store = WeightStore::open_dir(dir);
  const ModelWeights host = load_model_weights(store, config, read_quant_config(dir, config));
  Runner gpu(gpu_backend(), config, host, 128);
  const std::vector<int32_t> want(ids.begin() + 1, ids.end());
  const auto [got, rows] = gpu.greedy({ids[0]}, static_cast<int>(want.size()));
  size_t same = 0;
  while (same < got.size() && got[same] == want[same]) ++same;
  std::printf("  llama2c aidreams260K: %zu of %zu greedy ids equal HF's before the first difference\n", same,
              want.size());
  EXPECT_GE(same, static_cast<size_t>(kGreedy));
}

using test::QuantisedWeights;

TEST(CudaModel, Nvfp4MatchesCpuBackend) {
  NIBBLE_REQUIRE_GPU();
  for (const auto& dir : model_dirs()) {
    SCOPED_TRACE(dir.filename().string());
    const ModelConfig config = ModelConfig::load(dir);
    const WeightStore store = WeightStore::open_dir(dir);
    const QuantisedWeights q(load_model_weights(store, config, read_quant_config(dir, config)));
    const Reference ref = load_reference(dir);
    const int64_t P = static_cast<int64_t>(ref.prompt.size());

    Runner cpu(make_backend("cpu", BackendOptions{4}), config, q.w, 128);
    Runner gpu(gpu_backend(), config, q.w, 128);
    const auto lc = cpu.forward(ref.prompt, 0, P), lg = gpu.forward(ref.prompt, 0, P);
    const double e = nmse_vs(std::span<const float>(lg), lc);
    double worst = 0;
    for (size_t i = 0; i < lg.size(); ++i) worst = std::max(worst, double(std::abs(lg[i] - lc[i])));
    EXPECT_LT(e, kLogitNmse);
    std::printf("  %-30s prompt logits NMSE %.2e, max|diff| %.3g\n",
                (dir.filename().string() + " NVFP4 vs CPU").c_str(), e, worst);
    Runner cpu2(make_backend("cpu", BackendOptions{4}), config, q.w, 128);
    const auto cpu_greedy = cpu2.greedy(ref.prompt, kGreedy);
    // The CPU backend's NVFP4 path against the generator's (PyTorch float64, the same quantiser):
    // the reference margins hold this path apart from fp32-vs-float64 differences too.
    EXPECT_EQ(cpu_greedy.first, ref.nvfp4_greedy_ids) << "NVFP4 CPU greedy ids vs gen_model_fixtures.py";
    Runner teacher(gpu_backend(), config, q.w, 128), free_run(gpu_backend(), config, q.w, 128);
    check_greedy(teacher, free_run, ref.prompt, cpu_greedy.first, cpu_greedy.second, worst,
                 dir.filename().string() + " NVFP4");
  }
}

}  // namespace
}  // namespace nibble

namespace nibble {
namespace {

// The user-facing path: Engine with device "cuda" (planned memory printed at load), and the
// `nibble generate --device cuda` command on the llama2.c model against HF's greedy ids.
TEST(CudaEngine, GenerateMatchesHfGreedyIds) {
  NIBBLE_REQUIRE_GPU();
  const auto dir = test::data_dir() / "llama2c_aidreams260K" / "hf";
  std::ifstream f(dir / "hf_greedy_ids.txt");
  std::vector<std::string> ids;
  std::string tok;
  while (std::getline(f, tok, ',')) ids.push_back(tok);
  ASSERT_GT(ids.size(), 33u);
  const auto r = test::run_nibble(
      {"generate", "--model", dir.string(), "--device", "cuda", "--prompt-ids", "1", "--max-tokens", "32"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  std::string want;
  for (int i = 1; i <= 32; ++i) want += (i > 1 ? "," : "") + ids[i];
  EXPECT_NE(r.out.find(want), std::string::npos) << "stdout: " << r.out << "\nwant: " << want;
  EXPECT_NE(r.err.find("GPU memory plan"), std::string::npos) << r.err;

  auto engine = Engine::load(dir, EngineOptions{.device = "cuda"});
  const std::vector<int32_t> prompt = {1};
  std::span<const float> logits = engine->forward(prompt);
  std::string got;
  for (int i = 0; i < 32; ++i) {
    const int32_t id = argmax(logits);
    got += (i ? "," : "") + std::to_string(id);
    logits = engine->forward(std::span<const int32_t>(&id, 1));
  }
  EXPECT_EQ(got, want);
}

// --mem-report on the GPU carries the planner's numbers beside the driver's: the arena (peak) is
// allocated once at load, and what the model took of it (used) never exceeds it.
TEST(CudaEngine, MemReportHasPlannerNumbers) {
  NIBBLE_REQUIRE_GPU();
  test::ScratchDir tmp("memreport");
  const auto dir = test::data_dir() / "llama2c_aidreams260K" / "hf";
  const auto report = tmp / "mem.jsonl";
  const auto r = test::run_nibble({"generate", "--model", dir.string(), "--device", "cuda", "--prompt-ids",
                                   "1", "--max-tokens", "8", "--mem-report", report.string()});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  std::ifstream in(report);
  std::string line;
  std::vector<std::string> phases;
  while (std::getline(in, line)) {
    const auto j = nlohmann::json::parse(line);
    phases.push_back(j.at("phase").get<std::string>());
    ASSERT_TRUE(j.at("planner_used_bytes").is_number()) << line;
    ASSERT_TRUE(j.at("planner_peak_bytes").is_number()) << line;
    EXPECT_GT(j.at("planner_used_bytes").get<uint64_t>(), 0u) << line;
    EXPECT_LE(j.at("planner_used_bytes").get<uint64_t>(), j.at("planner_peak_bytes").get<uint64_t>()) << line;
  }
  EXPECT_EQ(phases, (std::vector<std::string>{"load", "prefill", "decode"}));
}

// Engine::forward_sample: greedy on the device gives forward() + argmax's ids; a sampled run
// (temperature, top-k, top-p) is reproducible from the same uniforms and stays in the vocabulary.
TEST(CudaEngine, ForwardSampleOnTheDevice) {
  NIBBLE_REQUIRE_GPU();
  const auto dir = test::data_dir() / "llama2c_aidreams260K" / "hf";
  auto a = Engine::load(dir, EngineOptions{.device = "cuda"}),
       b = Engine::load(dir, EngineOptions{.device = "cuda"});
  std::vector<int32_t> seen = {1}, ref;
  std::span<const float> logits = b->forward(seen);
  SamplerParams greedy;
  std::optional<int32_t> id = a->forward_sample(seen, greedy, seen, 0.5);
  ASSERT_TRUE(id.has_value());
  for (int i = 0; i < 32; ++i) {
    const int32_t want = argmax(logits);
    ASSERT_EQ(*id, want) << "step " << i;
    logits = b->forward(std::span<const int32_t>(&want, 1));
    id = a->forward_sample(std::span<const int32_t>(&want, 1), greedy, seen, 0.5);
  }
  SamplerParams p;
  p.temperature = 0.8f;
  p.top_k = 20;
  p.top_p = 0.9f;
  std::vector<int32_t> runs[2];
  for (auto& run : runs) {
    auto e = Engine::load(dir, EngineOptions{.device = "cuda"});
    std::vector<int32_t> s = {1};
    std::optional<int32_t> t = e->forward_sample(s, p, s, 0.0);
    for (int i = 0; i < 32; ++i) {
      ASSERT_TRUE(t && *t >= 0 && *t < e->config().vocab_size);
      run.push_back(*t);
      s.push_back(*t);
      t = e->forward_sample(std::span<const int32_t>(&s.back(), 1), p, s,
                            (i * 0.618034) - std::floor(i * 0.618034));
    }
  }
  EXPECT_EQ(runs[0], runs[1]);
  EXPECT_FALSE(Engine::load(dir, EngineOptions{.device = "cpu"})->forward_sample(seen, greedy, seen, 0.5))
      << "the CPU backend leaves sampling to runtime/sampler.h";
}

// An engine that decodes one step at a time: every call goes to `inner`, but it never pipelines.
class StepByStep final : public Engine {
 public:
  explicit StepByStep(std::unique_ptr<Engine> inner) : e_(std::move(inner)) {}
  const ModelConfig& config() const override { return e_->config(); }
  int64_t context_length() const override { return e_->context_length(); }
  int64_t position() const override { return e_->position(); }
  std::span<const float> forward(std::span<const int32_t> t) override { return e_->forward(t); }
  std::vector<float> forward_all(std::span<const int32_t> t) override { return e_->forward_all(t); }
  bool samples_on_device() const override { return e_->samples_on_device(); }
  std::optional<int32_t> forward_sample(std::span<const int32_t> t, const SamplerParams& p,
                                        std::span<const int32_t> seen, double u) override {
    return e_->forward_sample(t, p, seen, u);
  }
  void truncate(int64_t n) override { e_->truncate(n); }

 private:
  std::unique_ptr<Engine> e_;
};

// Pipelined decoding on the GPU (the sampled id fed to the next recorded step on the device, the
// step after it enqueued before the host reads the id) gives generate() the ids, stop reasons, KV
// cache (the logits of a token forwarded after both turns, bit for bit) and sampler stream of one
// step at a time: greedy and sampled, ended by max_tokens and by an end-of-sequence id met mid-run
// (the speculative step past it taken back), two turns of one cached sequence.
TEST(CudaEngine, PipelinedGenerateEqualsStepByStep) {
  NIBBLE_REQUIRE_GPU();
  const auto dir = test::data_dir() / "llama2c_aidreams260K" / "hf";
  SamplerParams greedy, sampled;
  sampled.temperature = 0.8f;
  sampled.top_k = 20;
  sampled.seed = 3;
  // An id the greedy run emits a few steps in: as an end-of-sequence id it stops a run mid-way.
  int32_t mid_eos = -1;
  {
    auto e = Engine::load(dir, EngineOptions{.device = "cuda"});
    Sampler s(greedy);
    StopChecker none({}, {});
    GenerateOptions o;
    o.max_tokens = 12;
    const std::vector<int32_t> prompt = {1};
    const GenerateResult r = generate(*e, prompt, 0, s, none, nullptr, o);
    ASSERT_EQ(r.tokens.size(), 12u);
    mid_eos = r.tokens[6];
  }
  struct Case {
    const char* what;
    SamplerParams params;
    int64_t max_tokens;
    std::vector<int32_t> eos;
  };
  // (The model's context is 128 tokens: two turns of up to 40 fit, with room for a probe after.)
  const Case cases[] = {{"greedy, max tokens", greedy, 33, {}},
                        {"greedy, mid-run eos", greedy, 40, {mid_eos}},
                        {"sampled, max tokens", sampled, 27, {}},
                        {"sampled, eos", sampled, 40, {mid_eos}}};
  for (const Case& c : cases) {
    SCOPED_TRACE(c.what);
    std::vector<int32_t> ids[2];
    std::vector<StopReason> reasons[2];
    std::vector<float> after[2];
    double next_u[2] = {0, 0};
    for (int pipelined = 0; pipelined < 2; ++pipelined) {
      std::unique_ptr<Engine> e = Engine::load(dir, EngineOptions{.device = "cuda"});
      ASSERT_TRUE(e->can_pipeline(c.params));
      if (pipelined == 0) e = std::make_unique<StepByStep>(std::move(e));
      Sampler sampler(c.params);
      GenerateOptions o;
      o.max_tokens = c.max_tokens;
      std::vector<int32_t> seq = {1};
      for (int turn = 0; turn < 2; ++turn) {
        StopChecker stop(c.eos, {});
        const GenerateResult r = generate(*e, seq, e->position(), sampler, stop, nullptr, o);
        ids[pipelined].insert(ids[pipelined].end(), r.tokens.begin(), r.tokens.end());
        reasons[pipelined].push_back(r.reason);
        seq.insert(seq.end(), r.tokens.begin(), r.tokens.end());
        seq.push_back(1);
      }
      ASSERT_LT(e->position(), e->context_length());
      const int32_t probe = 2;
      const std::span<const float> l = e->forward(std::span<const int32_t>(&probe, 1));
      after[pipelined].assign(l.begin(), l.end());
      next_u[pipelined] = sampler.next_uniform();
    }
    EXPECT_EQ(ids[1], ids[0]);
    EXPECT_EQ(reasons[1], reasons[0]);
    EXPECT_TRUE(after[1] == after[0]) << "the logits after both turns differ: the KV caches do";
    EXPECT_EQ(next_u[1], next_u[0]);
    if (!c.eos.empty() && c.params.temperature <= 0.0f)
      EXPECT_EQ(reasons[0].front(), StopReason::eos) << "the greedy run meets its eos id";
  }
}

TEST(CudaEngine, GpuMemBudgetRefusesWithThePlan) {
  NIBBLE_REQUIRE_GPU();
  const auto dir = test::data_dir() / "llama2c_aidreams260K" / "hf";
  const auto r = test::run_nibble({"generate", "--model", dir.string(), "--device", "cuda", "--prompt-ids",
                                   "1", "--max-tokens", "4", "--gpu-mem-budget", "0.001"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("does not fit"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("kv cache"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace nibble
