#include "runtime/sampler.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <queue>

#include "core/error.h"
#include "format/hf_config.h"

namespace nibble {

namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();

// HF's default for top_k when sampling and generation_config.json does not set it.
constexpr int64_t kHfDefaultTopK = 50;

// One surviving token: (probability, id).
using Cand = std::pair<double, int32_t>;

// Descending probability, ties: lower id first. A strict total order, so the selections below
// are deterministic.
bool before(const Cand& a, const Cand& b) {
  return a.first != b.first ? a.first > b.first : a.second < b.second;
}

void normalize(std::vector<Cand>& c) {
  double sum = 0;
  for (const Cand& e : c) sum += e.first;
  for (Cand& e : c) e.first /= sum;
}

// HF TopPLogitsWarper sorts ascending and removes tokens whose ascending cumulative probability is
// <= 1 - top_p. In descending order that keeps a token while the mass strictly above it is
// < top_p: the token that crosses top_p stays, and at least one token always does.
// A full sort of a 150k vocabulary costs ~10 ms, so this finds the kept count by quickselect on
// the mass instead (expected linear time): the kept tokens end up first, in no particular order.
size_t nucleus_size(std::vector<Cand>& c, double top_p) {
  size_t lo = 0, hi = c.size();  // [0, lo) kept, [hi, n) dropped, [lo, hi) undecided
  double need = top_p;           // mass still to reach with the undecided tokens
  while (hi - lo > 32) {
    const size_t mid = lo + (hi - lo) / 2;
    std::nth_element(c.begin() + lo, c.begin() + mid, c.begin() + hi, before);
    double upper = 0;
    for (size_t j = lo; j < mid; ++j) upper += c[j].first;
    if (upper >= need) {
      hi = mid;  // the token at mid already has >= top_p above it
    } else {
      need -= upper;
      lo = mid;
    }
  }
  std::sort(c.begin() + lo, c.begin() + hi, before);
  for (size_t j = lo; j < hi; ++j) {
    if (need <= 0 && j > 0) return j;
    need -= c[j].first;
  }
  return hi;
}

// HF MinPLogitsWarper: removes tokens whose probability is below min_p times the top probability.
void apply_min_p(std::vector<Cand>& c, double min_p) {
  double top = 0;
  for (const Cand& e : c) top = std::max(top, e.first);
  std::erase_if(c, [&](const Cand& e) { return e.first < min_p * top; });
  normalize(c);
}

// The k-th largest finite value of x (1 <= k < number of finite values): a min-heap of size k in
// one pass; most values fail the first comparison, so it costs about one read per entry.
float kth_largest(const std::vector<float>& x, int64_t k) {
  std::priority_queue<float, std::vector<float>, std::greater<float>> heap;
  for (float v : x) {
    if (std::isnan(v) || v == kNegInf) continue;
    if (static_cast<int64_t>(heap.size()) < k) {
      heap.push(v);
    } else if (v > heap.top()) {
      heap.pop();
      heap.push(v);
    }
  }
  return heap.top();
}

// Temperature, top-k, top-p and min-p over the penalized logits `x`: the candidates and their
// probabilities, in `out`.
void distribution(const std::vector<float>& x, const SamplerParams& params, std::vector<Cand>& out) {
  int64_t finite = 0;
  float mx = kNegInf;
  for (float v : x) {
    if (std::isnan(v) || v == kNegInf) continue;
    ++finite;
    mx = std::max(mx, v);
  }
  if (finite == 0) fail("the model returned no finite logit to sample from ({} entries)", x.size());
  // HF TopKLogitsWarper removes scores below the k-th largest (ties with it stay). Temperature
  // keeps the order, so the threshold can be taken before it.
  float threshold = kNegInf;
  if (params.top_k > 0 && params.top_k < finite) threshold = kth_largest(x, params.top_k);
  // TemperatureLogitsWarper and the softmax; exp in fp32 (as torch does), the sum in fp64.
  const float inv_t = 1.0f / params.temperature;
  out.clear();
  for (size_t i = 0; i < x.size(); ++i) {
    if (std::isnan(x[i]) || x[i] == kNegInf || x[i] < threshold) continue;
    out.emplace_back(std::exp((x[i] - mx) * inv_t), static_cast<int32_t>(i));
  }
  normalize(out);
  if (params.top_p < 1.0f) {
    out.resize(nucleus_size(out, params.top_p));
    normalize(out);
  }
  if (params.min_p > 0.0f) apply_min_p(out, params.min_p);
}

int32_t argmax(const std::vector<float>& x) {
  // First maximum, as torch.argmax; NaN never wins.
  int32_t best = -1;
  for (size_t i = 0; i < x.size(); ++i) {
    if (std::isnan(x[i])) continue;
    if (best < 0 || x[i] > x[best]) best = static_cast<int32_t>(i);
  }
  return best;
}

}  // namespace

void SamplerParams::validate() const {
  if (!std::isfinite(temperature) || temperature < 0)
    fail("temperature must be a finite number >= 0 (0 = greedy), got {}", temperature);
  if (top_k < 0) fail("top-k must be >= 0 (0 = off), got {}", top_k);
  if (!(top_p > 0 && top_p <= 1)) fail("top-p must be in (0, 1] (1 = off), got {}", top_p);
  if (!(min_p >= 0 && min_p <= 1)) fail("min-p must be in [0, 1] (0 = off), got {}", min_p);
  if (!(repetition_penalty > 0) || !std::isfinite(repetition_penalty))
    fail("repetition penalty must be a finite number > 0 (1 = off), got {}", repetition_penalty);
}

SamplerParams resolve_sampler_params(const GenerationConfig& gen, const SamplerOverrides& flags) {
  SamplerParams p;
  bool sampling;
  if (flags.temperature) {
    sampling = *flags.temperature > 0;
  } else {
    // A top-k/top-p/min-p flag on a greedy config asks for sampling.
    sampling = gen.do_sample || flags.top_k || flags.top_p || flags.min_p;
  }
  if (sampling) {
    p.temperature = static_cast<float>(flags.temperature.value_or(gen.temperature.value_or(1.0)));
    p.top_k = flags.top_k.value_or(gen.top_k.value_or(kHfDefaultTopK));
    p.top_p = static_cast<float>(flags.top_p.value_or(gen.top_p.value_or(1.0)));
    p.min_p = static_cast<float>(flags.min_p.value_or(gen.min_p.value_or(0.0)));
  }
  p.repetition_penalty =
      static_cast<float>(flags.repetition_penalty.value_or(gen.repetition_penalty.value_or(1.0)));
  if (flags.seed) {
    p.seed = *flags.seed;
  } else {
    std::random_device rd;
    p.seed = (static_cast<uint64_t>(rd()) << 32) ^ rd();
  }
  p.validate();
  return p;
}

Sampler::Sampler(const SamplerParams& params) : params_(params), rng_(params.seed) { params_.validate(); }

void Sampler::process(std::span<const float> logits, std::span<const int32_t> seen,
                      std::vector<float>& x) const {
  x.assign(logits.begin(), logits.end());
  if (params_.repetition_penalty == 1.0f) return;
  // HF gathers the seen ids' scores and scatters the penalized values back: each id once.
  std::vector<int32_t> ids(seen.begin(), seen.end());
  std::sort(ids.begin(), ids.end());
  ids.erase(std::unique(ids.begin(), ids.end()), ids.end());
  const float pen = params_.repetition_penalty;
  for (int32_t id : ids) {
    if (id < 0 || static_cast<size_t>(id) >= x.size()) continue;
    x[id] = x[id] < 0 ? x[id] * pen : x[id] / pen;
  }
}

std::vector<double> Sampler::probabilities(std::span<const float> logits,
                                           std::span<const int32_t> seen) const {
  std::vector<float> x;
  process(logits, seen, x);
  std::vector<double> out(x.size(), 0.0);
  if (params_.greedy()) {
    const int32_t i = argmax(x);
    if (i >= 0) out[i] = 1.0;
    return out;
  }
  std::vector<Cand> c;
  distribution(x, params_, c);
  for (const auto& [p, id] : c) out[id] = p;
  return out;
}

double Sampler::next_uniform() {
  // A 53-bit uniform in [0, 1) from the raw engine output, so that a seed gives the same draws on
  // every standard library (std::uniform_real_distribution is implementation-defined).
  return static_cast<double>(rng_() >> 11) * 0x1.0p-53;
}

double Sampler::next_uniform_tentative() {
  before_tentative_ = rng_;
  return next_uniform();
}

void Sampler::take_back_uniform() { rng_ = before_tentative_; }

int32_t Sampler::sample(std::span<const float> logits, std::span<const int32_t> seen) {
  process(logits, seen, x_);
  if (params_.greedy()) {
    const int32_t i = argmax(x_);
    if (i < 0) fail("the model returned only NaN logits ({} entries)", logits.size());
    return i;
  }
  distribution(x_, params_, cands_);
  const double u = next_uniform();
  double cum = 0;
  for (const auto& [p, id] : cands_) {
    cum += p;
    if (u < cum) return id;
  }
  return cands_.back().second;  // rounding left u >= the total: the last candidate
}

std::vector<std::pair<int32_t, float>> top_logits(std::span<const float> logits, int64_t k) {
  std::vector<int32_t> ids(logits.size());
  std::iota(ids.begin(), ids.end(), 0);
  k = std::clamp<int64_t>(k, 0, static_cast<int64_t>(ids.size()));
  // NaN sorts last so that the comparison stays a strict weak order.
  auto key = [&](int32_t i) { return std::isnan(logits[i]) ? kNegInf : logits[i]; };
  auto by_logit = [&](int32_t a, int32_t b) { return key(a) != key(b) ? key(a) > key(b) : a < b; };
  std::partial_sort(ids.begin(), ids.begin() + k, ids.end(), by_logit);
  std::vector<std::pair<int32_t, float>> out;
  for (int64_t j = 0; j < k; ++j) out.emplace_back(ids[j], logits[ids[j]]);
  return out;
}

}  // namespace nibble
