// defines: RopeParams and rope_params(), the rotary inverse frequencies and attention scaling of a
// config, computed as HF transformers' rope init functions do (modeling_rope_utils.py: default,
// linear, yarn, llama3).
#pragma once

#include <vector>

#include "format/hf_config.h"

namespace nibble {

struct RopeParams {
  std::vector<float> inv_freq;     // (head_dim / 2): angle of pair j at position p = p * inv_freq[j]
  float attention_scaling = 1.0f;  // multiplies cos and sin (yarn), 1 for the other types
};

RopeParams rope_params(const ModelConfig& config);

}  // namespace nibble
