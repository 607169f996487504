#include "runtime/sampler.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

#include "core/error.h"
#include "format/hf_config.h"

namespace nibble {

namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();

// HF's default for top_k when sampling and generation_config.json does not set it.
constexpr int64_t kHfDefaultTopK = 50;

// The surviving tokens of one step and their normalized probabilities (same order).
struct Dist {
  std::vector<int32_t> ids;
  std::vector<double> p;
};

void softmax_over(const std::vector<float>& x, Dist& d) {
  float mx = kNegInf;
  for (int32_t i : d.ids) mx = std::max(mx, x[i]);
  d.p.resize(d.ids.size());
  double sum = 0;
  for (size_t j = 0; j < d.ids.size(); ++j) {
    d.p[j] = std::exp(static_cast<double>(x[d.ids[j]]) - mx);
    sum += d.p[j];
  }
  for (double& v : d.p) v /= sum;
}

void keep_if(Dist& d, const std::vector<char>& keep) {
  size_t w = 0;
  for (size_t j = 0; j < d.ids.size(); ++j) {
    if (keep[j]) {
      d.ids[w] = d.ids[j];
      d.p[w] = d.p[j];
      ++w;
    }
  }
  d.ids.resize(w);
  d.p.resize(w);
  const double sum = std::accumulate(d.p.begin(), d.p.end(), 0.0);
  for (double& v : d.p) v /= sum;
}

// Sorts `d` by descending probability (ties: lower id first), only as far as needed: the first
// `m` entries are ordered after the call.
void sort_prefix(Dist& d, size_t m) {
  std::vector<size_t> order(d.ids.size());
  std::iota(order.begin(), order.end(), 0);
  m = std::min(m, order.size());
  std::partial_sort(
      order.begin(), order.begin() + static_cast<std::ptrdiff_t>(m), order.end(),
      [&](size_t a, size_t b) { return d.p[a] != d.p[b] ? d.p[a] > d.p[b] : d.ids[a] < d.ids[b]; });
  Dist s;
  s.ids.reserve(order.size());
  s.p.reserve(order.size());
  for (size_t j : order) {
    s.ids.push_back(d.ids[j]);
    s.p.push_back(d.p[j]);
  }
  d = std::move(s);
}

// HF TopPLogitsWarper: sorts ascending, removes tokens whose ascending cumulative probability is
// <= 1 - top_p. In descending order that keeps a token while the mass strictly above it is < top_p,
// so the token that crosses top_p is kept. At least one token always stays.
void apply_top_p(Dist& d, double top_p) {
  size_t sorted = std::min<size_t>(64, d.ids.size());
  sort_prefix(d, sorted);
  double above = 0;
  size_t keep = 0;
  while (keep < d.ids.size() && (keep == 0 || above < top_p)) {
    if (keep == sorted) {  // need more of the order: sort a longer prefix
      sorted = std::min(d.ids.size(), sorted * 4);
      sort_prefix(d, sorted);
    }
    above += d.p[keep];
    ++keep;
  }
  d.ids.resize(keep);
  d.p.resize(keep);
  const double sum = std::accumulate(d.p.begin(), d.p.end(), 0.0);
  for (double& v : d.p) v /= sum;
}

// HF MinPLogitsWarper: removes tokens whose probability is below min_p times the top probability.
void apply_min_p(Dist& d, double min_p) {
  const double top = *std::max_element(d.p.begin(), d.p.end());
  std::vector<char> keep(d.ids.size());
  for (size_t j = 0; j < d.ids.size(); ++j) keep[j] = !(d.p[j] < min_p * top);
  keep_if(d, keep);
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

std::vector<float> Sampler::process(std::span<const float> logits, std::span<const int32_t> seen) const {
  std::vector<float> x(logits.begin(), logits.end());
  const int64_t vocab = static_cast<int64_t>(x.size());
  if (params_.repetition_penalty != 1.0f) {
    // HF gathers the seen ids' scores and scatters the penalized values back: each id once.
    std::vector<char> done(x.size(), 0);
    const float pen = params_.repetition_penalty;
    for (int32_t id : seen) {
      if (id < 0 || id >= vocab || done[id]) continue;
      done[id] = 1;
      x[id] = x[id] < 0 ? x[id] * pen : x[id] / pen;
    }
  }
  return x;
}

std::vector<double> Sampler::probabilities(std::span<const float> logits,
                                           std::span<const int32_t> seen) const {
  std::vector<float> x = process(logits, seen);
  std::vector<double> out(x.size(), 0.0);
  if (params_.greedy()) {
    const int32_t i = argmax(x);
    if (i >= 0) out[i] = 1.0;
    return out;
  }
  for (float& v : x) v /= params_.temperature;

  Dist d;
  d.ids.reserve(x.size());
  for (size_t i = 0; i < x.size(); ++i)
    if (!std::isnan(x[i]) && x[i] != kNegInf) d.ids.push_back(static_cast<int32_t>(i));
  if (d.ids.empty()) fail("the model returned no finite logit to sample from ({} entries)", x.size());

  // HF TopKLogitsWarper: removes scores below the k-th largest (ties with it stay).
  if (params_.top_k > 0 && params_.top_k < static_cast<int64_t>(d.ids.size())) {
    std::vector<float> vals;
    vals.reserve(d.ids.size());
    for (int32_t i : d.ids) vals.push_back(x[i]);
    auto kth = vals.begin() + (params_.top_k - 1);
    std::nth_element(vals.begin(), kth, vals.end(), std::greater<float>());
    const float threshold = *kth;
    std::erase_if(d.ids, [&](int32_t i) { return x[i] < threshold; });
  }
  softmax_over(x, d);
  if (params_.top_p < 1.0f) apply_top_p(d, params_.top_p);
  if (params_.min_p > 0.0f) apply_min_p(d, params_.min_p);
  for (size_t j = 0; j < d.ids.size(); ++j) out[d.ids[j]] = d.p[j];
  return out;
}

int32_t Sampler::sample(std::span<const float> logits, std::span<const int32_t> seen) {
  if (params_.greedy()) {
    const int32_t i = argmax(process(logits, seen));
    if (i < 0) fail("the model returned only NaN logits ({} entries)", logits.size());
    return i;
  }
  const std::vector<double> p = probabilities(logits, seen);
  // A 53-bit uniform in [0, 1) from the raw engine output, so that a seed gives the same draws on
  // every standard library (std::uniform_real_distribution is implementation-defined).
  const double u = static_cast<double>(rng_() >> 11) * 0x1.0p-53;
  double cum = 0;
  int32_t last = -1;
  for (size_t i = 0; i < p.size(); ++i) {
    if (p[i] <= 0) continue;
    last = static_cast<int32_t>(i);
    cum += p[i];
    if (u < cum) return last;
  }
  return last;  // rounding left u >= the total: the last candidate
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
