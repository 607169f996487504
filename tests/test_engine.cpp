// The Engine on a real trained model and on bad input.
//
// tests/fixtures/llama2c_aidreams260K/hf is a small trained Llama (4 layers, dim 64, vocab 512,
// 128 positions) with HF transformers' greedy ids from BOS = 1: ours must be identical, all 127.
// Bad input must give an Error that says what is wrong and leaves the sequence unchanged: a
// prompt longer than the context, a token id outside the vocabulary, a model dir missing a file or
// a tensor, a mis-shaped tensor, an unknown architecture.
#include <gtest/gtest.h>

#include <algorithm>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/file.h"
#include "format/safetensors.h"
#include "quant/nvfp4.h"
#include "runtime/engine.h"
#include "support/test_support.h"

namespace nibble {
namespace {

using test::error_of;

std::filesystem::path llama_dir() { return test::data_dir() / "llama2c_aidreams260K" / "hf"; }

std::vector<int32_t> read_ids(const std::filesystem::path& path) {
  std::stringstream ss(read_text_file(path));
  std::vector<int32_t> ids;
  std::string item;
  while (std::getline(ss, item, ',')) {
    if (item.find_first_not_of(" \n\r\t") != std::string::npos) ids.push_back(std::stoi(item));
  }
  return ids;
}

int32_t argmax(std::span<const float> v) {
  return static_cast<int32_t>(std::max_element(v.begin(), v.end()) - v.begin());
}

// The message of the Error `fn` throws ("" and a test failure when it throws none).
// A copy of the llama fixture in `dir`; `edit` may drop or replace tensors before writing.
void copy_llama(const std::filesystem::path& dir,
                const std::function<void(const TensorInfo&, SafetensorsWriter&)>& per_tensor) {
  std::filesystem::create_directories(dir);
  for (const char* f : {"config.json", "generation_config.json"}) {
    std::filesystem::copy_file(llama_dir() / f, dir / f);
  }
  const WeightStore store = WeightStore::open_dir(llama_dir());
  SafetensorsWriter w;
  for (const auto& name : store.names()) per_tensor(store.get(name), w);
  w.write(dir / "model.safetensors");
}

void keep(const TensorInfo& t, SafetensorsWriter& w) {
  w.add(t.name, t.dtype, t.shape, std::span<const uint8_t>(t.data, t.nbytes));
}

TEST(Engine, LlamaGreedyMatchesHf) {
  const std::vector<int32_t> expected = read_ids(llama_dir() / "hf_greedy_ids.txt");  // BOS + 127
  ASSERT_EQ(expected.size(), 128u);
  ASSERT_EQ(expected[0], 1);
  for (int threads : {1, 3}) {
    EngineOptions opts;
    opts.threads = threads;
    auto engine = Engine::load(llama_dir(), opts);
    EXPECT_EQ(engine->context_length(), 128);  // min(max_position_embeddings, 4096)
    std::vector<int32_t> ids{1};
    std::span<const float> logits = engine->forward(ids);
    while (ids.size() < expected.size()) {
      ids.push_back(argmax(logits));
      if (ids.size() < expected.size()) logits = engine->forward(std::span<const int32_t>(&ids.back(), 1));
    }
    EXPECT_EQ(ids, expected) << threads << " threads";
    EXPECT_EQ(engine->position(), 127);
  }
}

TEST(Engine, ContextOverflowIsAnErrorAndChangesNothing) {
  auto engine = Engine::load(llama_dir(), EngineOptions{});
  std::vector<int32_t> too_long(129, 5);
  std::string msg = error_of([&] { engine->forward(too_long); });
  EXPECT_NE(msg.find("context length 128"), std::string::npos) << msg;
  EXPECT_EQ(engine->position(), 0);
  EXPECT_EQ(error_of([&] { engine->forward_all(too_long); }), msg);
  EXPECT_EQ(engine->position(), 0);
}

TEST(Engine, ContextOverflowAfterAPrefix) {
  auto engine = Engine::load(llama_dir(), EngineOptions{});
  std::vector<int32_t> prompt(120, 7);
  engine->forward(prompt);
  std::vector<int32_t> more(9, 7);
  const std::string msg = error_of([&] { engine->forward(more); });
  EXPECT_NE(msg.find("9 tokens at position 120"), std::string::npos) << msg;
  EXPECT_EQ(engine->position(), 120);
  EXPECT_EQ(error_of([&] { engine->forward_all(more); }), msg);
  // Exactly filling the context is fine.
  std::vector<int32_t> fill(8, 7);
  engine->forward(fill);
  EXPECT_EQ(engine->position(), 128);
}

TEST(Engine, ContextLengthOption) {
  EngineOptions opts;
  opts.context_length = 16;
  auto engine = Engine::load(llama_dir(), opts);
  EXPECT_EQ(engine->context_length(), 16);
  opts.context_length = 129;
  const std::string msg = error_of([&] { Engine::load(llama_dir(), opts); });
  EXPECT_NE(msg.find("max_position_embeddings 128"), std::string::npos) << msg;
}

TEST(Engine, TokenOutsideVocabularyIsAnError) {
  auto engine = Engine::load(llama_dir(), EngineOptions{});
  for (int32_t bad : {512, -1, 1 << 30}) {
    std::vector<int32_t> ids{1, 5, bad};
    const std::string msg = error_of([&] { engine->forward(ids); });
    EXPECT_NE(msg.find("token id " + std::to_string(bad) + " at index 2 is outside the vocabulary [0, 512)"),
              std::string::npos)
        << msg;
    EXPECT_EQ(engine->position(), 0);
  }
  EXPECT_NE(error_of([&] { engine->forward({}); }).find("at least one token"), std::string::npos);
}

TEST(Engine, TruncateBounds) {
  auto engine = Engine::load(llama_dir(), EngineOptions{});
  std::vector<int32_t> ids{1, 2, 3};
  engine->forward(ids);
  EXPECT_NE(error_of([&] { engine->truncate(4); }).find("holds 3"), std::string::npos);
  EXPECT_NE(error_of([&] { engine->truncate(-1); }).find("holds 3"), std::string::npos);
  engine->truncate(0);
  EXPECT_EQ(engine->position(), 0);
}

TEST(Engine, MissingTensorIsNamed) {
  test::ScratchDir tmp("engine-missing");
  const std::string dropped = "model.layers.2.mlp.up_proj.weight";
  copy_llama(tmp.path(), [&](const TensorInfo& t, SafetensorsWriter& w) {
    if (t.name != dropped) keep(t, w);
  });
  const std::string msg = error_of([&] { Engine::load(tmp.path(), EngineOptions{}); });
  EXPECT_NE(msg.find("missing " + dropped), std::string::npos) << msg;
}

TEST(Engine, MisShapedTensorIsNamed) {
  test::ScratchDir tmp("engine-shape");
  copy_llama(tmp.path(), [&](const TensorInfo& t, SafetensorsWriter& w) {
    if (t.name == "model.layers.1.input_layernorm.weight") {
      w.add(t.name, t.dtype, {t.shape[0] - 1},
            std::span<const uint8_t>(t.data, t.nbytes - dtype_size(t.dtype)));
    } else {
      keep(t, w);
    }
  });
  const std::string msg = error_of([&] { Engine::load(tmp.path(), EngineOptions{}); });
  EXPECT_NE(msg.find("model.layers.1.input_layernorm.weight: expected shape [64], found [63]"),
            std::string::npos)
      << msg;
}

TEST(Engine, MissingFilesAreErrors) {
  test::ScratchDir tmp("engine-files");
  EXPECT_NE(error_of([&] { Engine::load(tmp / "nope", EngineOptions{}); }).find("does not exist"),
            std::string::npos);
  // No config.json.
  EXPECT_NE(error_of([&] { Engine::load(tmp.path(), EngineOptions{}); }).find("config.json"),
            std::string::npos);
  // A config but no weights.
  std::filesystem::copy_file(llama_dir() / "config.json", tmp / "config.json");
  const std::string msg = error_of([&] { Engine::load(tmp.path(), EngineOptions{}); });
  EXPECT_NE(msg.find("no weights found"), std::string::npos) << msg;
}

TEST(Engine, UnknownArchitectureIsAnError) {
  test::ScratchDir tmp("engine-arch");
  copy_llama(tmp.path(), keep);
  auto config = nlohmann::json::parse(read_text_file(tmp / "config.json"));
  config["architectures"] = {"GPT2LMHeadModel"};
  config["model_type"] = "gpt2";
  write_file_atomic(tmp / "config.json", config.dump());
  const std::string msg = error_of([&] { Engine::load(tmp.path(), EngineOptions{}); });
  EXPECT_NE(msg.find("unsupported architecture \"GPT2LMHeadModel\""), std::string::npos) << msg;
}

TEST(Engine, UnknownDeviceIsAnError) {
  EngineOptions opts;
  opts.device = "tpu";
  EXPECT_NE(error_of([&] { Engine::load(llama_dir(), opts); }).find("unknown device \"tpu\""),
            std::string::npos);
}

// An NVFP4 checkpoint (ModelOpt layout, written here with the codec) runs through the Engine and
// gives the logits of the same model with those weights dequantised and stored dense: the CPU
// linear dequantises inside the dot product (nvfp4_matmul_rows). down_proj (K = 172, not a
// multiple of 16) stays dense, as `nibble quantize` leaves it. Tolerance: both sides are fp32
// with fp32 accumulation over the same values in a different order, ~1e-6 relative.
TEST(Engine, Nvfp4CheckpointMatchesItsDequantisedTwin) {
  test::ScratchDir tmp("engine-nvfp4");
  std::vector<std::shared_ptr<Nvfp4Tensor>> keep_alive;
  auto quantizable = [](const std::string& name) {
    return name.find("_proj.weight") != std::string::npos && name.find("down_proj") == std::string::npos;
  };
  copy_llama(tmp / "nvfp4", [&](const TensorInfo& t, SafetensorsWriter& w) {
    if (!quantizable(t.name)) return keep(t, w);
    auto q = std::make_shared<Nvfp4Tensor>(
        quantize_nvfp4(reinterpret_cast<const float*>(t.data), t.shape[0], t.shape[1]));
    const std::string prefix = t.name.substr(0, t.name.size() - 7);  // drop ".weight"
    w.add(t.name, DType::U8, {q->out, q->in / 2}, q->packed);
    w.add(prefix + ".weight_scale", DType::F8_E4M3, {q->out, q->in / 16}, q->scales);
    w.add(prefix + ".weight_scale_2", DType::F32, {},
          std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(&q->global_scale), 4));
    keep_alive.push_back(q);
  });
  std::vector<std::vector<float>> dense_copies;
  copy_llama(tmp / "dense", [&](const TensorInfo& t, SafetensorsWriter& w) {
    if (!quantizable(t.name)) return keep(t, w);
    const Nvfp4Tensor q = quantize_nvfp4(reinterpret_cast<const float*>(t.data), t.shape[0], t.shape[1]);
    dense_copies.push_back(dequantize_nvfp4(q.view()));
    const auto& d = dense_copies.back();
    w.add(t.name, DType::F32, t.shape,
          std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(d.data()), d.size() * 4));
  });
  ASSERT_EQ(keep_alive.size(), 4u * 6u);  // q, k, v, o, gate, up in 4 layers

  auto nvfp4 = Engine::load(tmp / "nvfp4", EngineOptions{});
  auto dense = Engine::load(tmp / "dense", EngineOptions{});
  std::vector<int32_t> prompt{1, 319, 459, 355, 260, 275, 429, 339};
  const std::vector<float> a = nvfp4->forward_all(prompt), b = dense->forward_all(prompt);
  ASSERT_EQ(a.size(), b.size());
  double worst = 0;
  for (size_t i = 0; i < a.size(); ++i) worst = std::max(worst, double(std::abs(a[i] - b[i])));
  EXPECT_LT(worst, 1e-4);
  // And it is a different model from the original: quantisation moved the logits.
  auto original = Engine::load(llama_dir(), EngineOptions{});
  const std::vector<float> o = original->forward_all(prompt);
  double moved = 0;
  for (size_t i = 0; i < a.size(); ++i) moved = std::max(moved, double(std::abs(a[i] - o[i])));
  EXPECT_GT(moved, 1e-2);
}

}  // namespace
}  // namespace nibble
