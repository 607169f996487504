#include "model/rope.h"

#include <algorithm>
#include <cmath>
#include <numbers>

#include "core/error.h"

namespace nibble {

namespace {

// Base frequencies theta^(-2j/d). HF computes them in fp32; double then one rounding agrees to
// within an ulp.
std::vector<double> base_inv_freq(double theta, int64_t dim) {
  std::vector<double> f(static_cast<size_t>(dim / 2));
  for (int64_t j = 0; j < dim / 2; ++j) {
    f[static_cast<size_t>(j)] = 1.0 / std::pow(theta, static_cast<double>(2 * j) / static_cast<double>(dim));
  }
  return f;
}

// YaRN (Peng et al. 2023, arXiv 2309.00071) as HF's _compute_yarn_parameters: interpolate the
// low-frequency pairs by `factor`, keep the high-frequency ones, ramp linearly in between; the
// ramp bounds are the pairs that rotate beta_fast / beta_slow times over the original context.
std::vector<double> yarn_inv_freq(const std::vector<double>& base, double theta, int64_t dim,
                                  const RopeScaling& s, double original_max) {
  auto correction_dim = [&](double rotations) {
    return (static_cast<double>(dim) * std::log(original_max / (rotations * 2.0 * std::numbers::pi))) /
           (2.0 * std::log(theta));
  };
  double low = std::max(std::floor(correction_dim(s.beta_fast)), 0.0);
  double high = std::min(std::ceil(correction_dim(s.beta_slow)), static_cast<double>(dim - 1));
  if (low == high) high += 0.001;  // HF: prevent a zero-width ramp
  std::vector<double> f(base.size());
  for (size_t j = 0; j < base.size(); ++j) {
    const double ramp = std::clamp((static_cast<double>(j) - low) / (high - low), 0.0, 1.0);
    const double extrapolation = 1.0 - ramp;  // weight of the unscaled frequency
    f[j] = base[j] / s.factor * (1.0 - extrapolation) + base[j] * extrapolation;
  }
  return f;
}

// Llama 3.1 (HF _compute_llama3_parameters): scale long wavelengths by 1/factor, keep short ones,
// blend in between.
std::vector<double> llama3_inv_freq(const std::vector<double>& base, const RopeScaling& s,
                                    double original_max) {
  const double low_wavelen = original_max / s.low_freq_factor;
  const double high_wavelen = original_max / s.high_freq_factor;
  std::vector<double> f(base.size());
  for (size_t j = 0; j < base.size(); ++j) {
    const double wavelen = 2.0 * std::numbers::pi / base[j];
    double v = wavelen > low_wavelen ? base[j] / s.factor : base[j];
    if (!(wavelen < high_wavelen) && !(wavelen > low_wavelen)) {
      const double smooth =
          (original_max / wavelen - s.low_freq_factor) / (s.high_freq_factor - s.low_freq_factor);
      v = (1.0 - smooth) * v / s.factor + smooth * v;
    }
    f[j] = v;
  }
  return f;
}

}  // namespace

RopeParams rope_params(const ModelConfig& config) {
  const int64_t dim = config.head_dim;
  if (dim <= 0 || dim % 2 != 0) fail("RoPE needs an even head_dim, found {}", dim);
  const RopeScaling& s = config.rope_scaling;
  const std::vector<double> base = base_inv_freq(config.rope_theta, dim);
  std::vector<double> f = base;
  double attention = 1.0;
  const double original_max = s.original_max_position_embeddings > 0
                                  ? s.original_max_position_embeddings
                                  : static_cast<double>(config.max_position_embeddings);
  switch (s.type) {
    case RopeScaling::Type::None:
      break;
    case RopeScaling::Type::Linear:
      for (double& v : f) v /= s.factor;
      break;
    case RopeScaling::Type::Yarn:
      f = yarn_inv_freq(base, config.rope_theta, dim, s, original_max);
      attention = s.attention_factor > 0 ? s.attention_factor
                                         : (s.factor <= 1.0 ? 1.0 : 0.1 * std::log(s.factor) + 1.0);
      break;
    case RopeScaling::Type::Llama3:
      f = llama3_inv_freq(base, s, original_max);
      break;
  }
  RopeParams p;
  p.inv_freq.assign(f.begin(), f.end());
  p.attention_scaling = static_cast<float>(attention);
  return p;
}

}  // namespace nibble
