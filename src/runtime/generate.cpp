#include "runtime/generate.h"

#include <cctype>
#include <charconv>
#include <chrono>
#include <limits>
#include <optional>

#include "core/error.h"
#include "runtime/engine.h"
#include "runtime/sampler.h"
#include "runtime/stop.h"
#include "tokenizer/tokenizer.h"

namespace nibble {

namespace {

double ms_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace

const char* stop_reason_name(StopReason reason) {
  switch (reason) {
    case StopReason::eos:
      return "eos";
    case StopReason::stop_string:
      return "stop";
    case StopReason::max_tokens:
      return "max_tokens";
    case StopReason::context_full:
      return "context_full";
  }
  return "?";
}

GenerateResult generate(Engine& engine, std::span<const int32_t> sequence, int64_t cached, Sampler& sampler,
                        StopChecker& stop, const Tokenizer* tok, const GenerateOptions& opts,
                        const std::function<void(std::string_view)>& on_text) {
  NIBBLE_ASSERT(cached == engine.position());
  NIBBLE_ASSERT(cached >= 0 && cached < static_cast<int64_t>(sequence.size()));
  NIBBLE_ASSERT(opts.max_tokens >= 1);
  if (!tok && stop.has_stop_strings())
    fail("stop strings need a tokenizer to decode the output; the model has none");

  GenerateResult r;
  std::vector<int32_t> seen(sequence.begin(), sequence.end());  // repetition-penalty input
  const auto prompt = sequence.subspan(static_cast<size_t>(cached));

  // Forwards `tokens` and picks the next id. Where the backend samples (CUDA) only the id crosses
  // to the host; top-logit reports need the whole row, so they take the host path.
  const bool on_device = opts.top_logits == 0 && engine.samples_on_device();
  auto step = [&](std::span<const int32_t> tokens) -> int32_t {
    if (on_device) {
      const auto id = engine.forward_sample(tokens, sampler.params(), seen, sampler.next_uniform());
      NIBBLE_ASSERT(id.has_value());
      return *id;
    }
    const std::span<const float> logits = engine.forward(tokens);
    if (opts.top_logits > 0) r.top_logits.push_back(top_logits(logits, opts.top_logits));
    return sampler.sample(logits, seen);
  };

  auto t0 = std::chrono::steady_clock::now();
  int32_t id = step(prompt);
  r.prefilled = static_cast<int64_t>(prompt.size());
  r.prefill_ms = ms_since(t0);
  if (opts.on_phase_end) opts.on_phase_end(Phase::prefill);

  std::optional<StreamDecoder> decoder;
  if (tok) decoder.emplace(*tok, /*skip_special=*/false);
  auto emit = [&](const std::string& s) {
    if (s.empty()) return;
    r.text += s;
    if (on_text) on_text(s);
  };

  // Pipelined decoding (Engine::decode_begin): while the host reads id n, the device already runs
  // the step of id n, fed with it on the device, and draws id n + 1. That step is speculative: when
  // id n ends the generation it is discarded (its KV entry truncated, its uniform taken back), so
  // the ids, the cache and the sampler's stream are those of the one-step-at-a-time loop.
  const bool pipelined = on_device && engine.can_pipeline(sampler.params());
  bool ahead = false;   // pipelined: the step of `id` is running, fed on the device
  int outstanding = 0;  // pipelined steps begun and not yet ended
  const auto begin_step = [&](std::optional<int32_t> token, double uniform) {
    engine.decode_begin(token, sampler.params(), uniform);
    ++outstanding;
  };
  const auto end_step = [&] {
    --outstanding;
    return engine.decode_end();
  };
  // The speculative step past the end: ended, its KV entry truncated, its uniform taken back.
  const auto take_back = [&] {
    while (outstanding > 0) end_step();
    if (ahead) {
      engine.truncate(engine.position() - 1);
      sampler.take_back_uniform();
      ahead = false;
    }
  };
  t0 = std::chrono::steady_clock::now();
  try {
    while (true) {
      r.tokens.push_back(id);
      seen.push_back(id);
      if (stop.is_eos(id)) {
        r.reason = StopReason::eos;
        break;
      }
      if (decoder) {
        r.raw += tok->piece(id);
        emit(stop.push(decoder->push(id)));
        if (stop.stopped()) {
          r.reason = StopReason::stop_string;
          break;
        }
      }
      if (static_cast<int64_t>(r.tokens.size()) >= opts.max_tokens) {
        r.reason = StopReason::max_tokens;
        break;
      }
      const int64_t pos = engine.position() - (ahead ? 1 : 0);  // where the step of `id` goes
      if (pos + 1 > engine.context_length()) {
        r.reason = StopReason::context_full;
        break;
      }
      if (!pipelined) {
        id = step(std::span<const int32_t>(&r.tokens.back(), 1));
        continue;
      }
      if (!ahead) begin_step(id, sampler.next_uniform());
      // The step after it, fed on the device, unless the next id ends the generation anyway.
      const bool more = static_cast<int64_t>(r.tokens.size()) + 1 < opts.max_tokens &&
                        engine.position() + 1 <= engine.context_length();
      ahead = false;
      if (more) {
        begin_step(std::nullopt, sampler.next_uniform_tentative());
        ahead = true;
      }
      id = end_step();
    }
  } catch (...) {  // e.g. on_text threw: leave the engine and sampler as one step at a time would
    take_back();
    throw;
  }
  take_back();
  if (decoder && !stop.stopped()) {
    emit(stop.push(decoder->flush()));
    if (stop.stopped()) r.reason = StopReason::stop_string;
    emit(stop.flush());
  }
  // Cut at the stop string: the shown text is exactly what precedes it.
  if (stop.stopped()) r.raw = r.text;
  r.decode_ms = ms_since(t0);
  if (opts.on_phase_end) opts.on_phase_end(Phase::decode);
  return r;
}

std::vector<int32_t> parse_token_ids(std::string_view text, std::string_view label) {
  std::vector<int32_t> ids;
  size_t pos = 0;
  while (true) {
    const size_t comma = text.find(',', pos);
    std::string_view item =
        text.substr(pos, comma == std::string_view::npos ? std::string_view::npos : comma - pos);
    while (!item.empty() && std::isspace(static_cast<unsigned char>(item.front()))) item.remove_prefix(1);
    while (!item.empty() && std::isspace(static_cast<unsigned char>(item.back()))) item.remove_suffix(1);
    int64_t v = 0;
    const auto [end, ec] = std::from_chars(item.data(), item.data() + item.size(), v);
    if (item.empty() || ec != std::errc() || end != item.data() + item.size() || v < 0 ||
        v > std::numeric_limits<int32_t>::max()) {
      fail("{}: expected comma-separated token ids like 1,2,3; entry {} is `{}`", label, ids.size() + 1,
           item);
    }
    ids.push_back(static_cast<int32_t>(v));
    if (comma == std::string_view::npos) break;
    pos = comma + 1;
  }
  return ids;
}

void check_prompt(std::span<const int32_t> ids, int64_t vocab, int64_t context_length) {
  if (ids.empty()) fail("the prompt is empty: at least one token is needed");
  for (size_t i = 0; i < ids.size(); ++i) {
    if (ids[i] < 0 || ids[i] >= vocab)
      fail("prompt token {} (position {}) is outside the model's vocabulary [0, {})", ids[i], i, vocab);
  }
  if (static_cast<int64_t>(ids.size()) > context_length)
    fail(
        "the prompt has {} tokens but the context holds {} (--context; at most the model's "
        "max_position_embeddings)",
        ids.size(), context_length);
}

}  // namespace nibble
