// safetensors: writer round trips for every dtype, alignment, the real llama fixture, sharded
// checkpoints, and every malformed-file error with the file and tensor named in the message.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <random>

#include "core/error.h"
#include "core/file.h"
#include "format/safetensors.h"
#include "support/test_support.h"

namespace nibble {
namespace {

using test::error_of;
using test::expect_contains;

namespace fs = std::filesystem;

const std::vector<DType> kAllDTypes = {DType::F64,     DType::F32, DType::F16, DType::BF16,
                                       DType::F8_E4M3, DType::U8,  DType::I8,  DType::I16,
                                       DType::I32,     DType::I64, DType::BOOL};

std::vector<uint8_t> random_bytes(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<uint8_t> v(n);
  for (auto& b : v) b = static_cast<uint8_t>(rng());
  return v;
}

// A file from a literal header and `data_bytes` zero bytes of data.
std::vector<uint8_t> raw_file(const std::string& header, size_t data_bytes) {
  std::vector<uint8_t> v(8 + header.size() + data_bytes, 0);
  const uint64_t n = header.size();
  std::memcpy(v.data(), &n, 8);
  std::copy(header.begin(), header.end(), v.begin() + 8);
  return v;
}

void write_bytes(const fs::path& p, const std::vector<uint8_t>& v) {
  std::ofstream out(p, std::ios::binary);
  out.write(reinterpret_cast<const char*>(v.data()), static_cast<std::streamsize>(v.size()));
}

std::string parse_error(const std::string& header, size_t data_bytes) {
  const auto bytes = raw_file(header, data_bytes);
  return error_of([&] { parse_safetensors(bytes, "bad.safetensors", nullptr); });
}

TEST(Safetensors, RoundTripEveryDType) {
  test::ScratchDir dir("st");
  SafetensorsWriter w;
  std::map<std::string, std::vector<uint8_t>> expected;
  uint32_t seed = 1;
  for (DType t : kAllDTypes) {
    const std::string name = "t." + std::string(dtype_name(t));
    expected[name] = random_bytes(3 * 5 * dtype_size(t), seed++);
    w.add(name, t, {3, 5}, expected[name]);
  }
  w.add_owned("scalar", DType::F32, {}, random_bytes(4, 99));
  w.add_owned("empty", DType::BF16, {0, 7}, {});
  w.set_metadata("format", "pt");
  const auto path = dir / "x.safetensors";
  w.write(path);
  EXPECT_EQ(w.data_bytes(), 15u * (8 + 4 + 2 + 2 + 1 + 1 + 1 + 2 + 4 + 8 + 1) + 4);

  const auto f = SafetensorsFile::open(path);
  EXPECT_EQ(f.metadata().at("format"), "pt");
  ASSERT_EQ(f.tensors().size(), kAllDTypes.size() + 2);
  for (DType t : kAllDTypes) {
    const std::string name = "t." + std::string(dtype_name(t));
    const TensorInfo* ti = f.find(name);
    ASSERT_NE(ti, nullptr) << name;
    EXPECT_EQ(ti->dtype, t);
    EXPECT_EQ(ti->shape, (std::vector<int64_t>{3, 5}));
    EXPECT_EQ(ti->numel(), 15);
    ASSERT_EQ(ti->nbytes, expected[name].size());
    EXPECT_EQ(std::memcmp(ti->data, expected[name].data(), ti->nbytes), 0) << name;
    EXPECT_EQ(ti->file, path.string());
  }
  EXPECT_EQ(f.find("scalar")->numel(), 1);
  EXPECT_EQ(f.find("scalar")->shape.size(), 0u);
  EXPECT_EQ(f.find("empty")->nbytes, 0u);
  EXPECT_EQ(f.find("nope"), nullptr);
  // No temporary file is left beside the output.
  EXPECT_EQ(std::distance(fs::directory_iterator(dir.path()), fs::directory_iterator()), 1);
}

TEST(Safetensors, DataIsAligned) {
  test::ScratchDir dir("st");
  SafetensorsWriter w;
  // Odd-sized small tensors first: the writer must still place every tensor at a multiple of its
  // element size, and the data block at a multiple of 8.
  w.add_owned("a_u8", DType::U8, {3}, random_bytes(3, 1));
  w.add_owned("b_f64", DType::F64, {2}, random_bytes(16, 2));
  w.add_owned("c_bf16", DType::BF16, {3}, random_bytes(6, 3));
  w.add_owned("d_i32", DType::I32, {1}, random_bytes(4, 4));
  const auto path = dir / "a.safetensors";
  w.write(path);
  const MappedFile mf(path);
  uint64_t n = 0;
  std::memcpy(&n, mf.data(), 8);
  EXPECT_EQ((8 + n) % 8, 0u);
  EXPECT_EQ(mf.data()[8], '{');
  const auto f = SafetensorsFile::open(path);
  for (const auto& t : f.tensors()) {
    const size_t data_offset = static_cast<size_t>(t.data - (f.tensors().front().data));
    EXPECT_EQ(data_offset % dtype_size(t.dtype), 0u) << t.name;
    EXPECT_EQ(reinterpret_cast<uintptr_t>(t.data) % dtype_size(t.dtype), 0u) << t.name;
  }
  EXPECT_EQ(f.tensors().front().name, "b_f64");  // largest element size first
}

TEST(Safetensors, RealLlamaFixture) {
  const auto path = test::data_dir() / "llama2c_aidreams260K/hf/model.safetensors";
  const auto f = SafetensorsFile::open(path);
  EXPECT_EQ(f.tensors().size(), 1u + 4 * 9 + 1);
  const TensorInfo* emb = f.find("model.embed_tokens.weight");
  ASSERT_NE(emb, nullptr);
  EXPECT_EQ(emb->dtype, DType::F32);
  EXPECT_EQ(emb->shape, (std::vector<int64_t>{512, 64}));
  EXPECT_EQ(emb->nbytes, 512u * 64 * 4);
  float v[2];
  std::memcpy(v, emb->data, sizeof v);  // reference values read with Python's struct module
  EXPECT_FLOAT_EQ(v[0], 0.10804883390665054f);
  EXPECT_FLOAT_EQ(v[1], 0.15735304355621338f);
  const TensorInfo* norm = f.find("model.norm.weight");
  ASSERT_NE(norm, nullptr);
  std::memcpy(v, norm->data, 4);
  EXPECT_FLOAT_EQ(v[0], 1.3196977376937866f);
  EXPECT_EQ(f.tensors().front().name, "model.embed_tokens.weight");  // file order
  EXPECT_EQ(f.find("model.layers.2.mlp.down_proj.weight")->shape, (std::vector<int64_t>{64, 172}));

  const auto ws = WeightStore::open_dir(path.parent_path());
  EXPECT_EQ(ws.names().size(), 38u);
  EXPECT_EQ(ws.get("model.norm.weight").nbytes, 256u);
  expect_contains(error_of([&] { ws.get("lm_head.weight"); }), {"lm_head.weight", "not found"});
  EXPECT_EQ(WeightStore::open(path).names().size(), 38u);  // a single file works too
}

// Two shards and an index, as HF writes them for large models.
struct ShardedCheckpoint {
  test::ScratchDir dir{"st-shard"};
  std::vector<uint8_t> a = random_bytes(24, 7), b = random_bytes(8, 8), c = random_bytes(6, 9);
  ShardedCheckpoint() {
    SafetensorsWriter w1, w2;
    w1.add("model.a", DType::F32, {2, 3}, a);
    w1.add("model.b", DType::I64, {1}, b);
    w2.add("model.c", DType::BF16, {3}, c);
    w1.write(dir / "model-00001-of-00002.safetensors");
    w2.write(dir / "model-00002-of-00002.safetensors");
    write_safetensors_index(dir / "model.safetensors.index.json",
                            {{"model.a", "model-00001-of-00002.safetensors"},
                             {"model.b", "model-00001-of-00002.safetensors"},
                             {"model.c", "model-00002-of-00002.safetensors"}},
                            38);
  }
};

TEST(Safetensors, ShardedCheckpoint) {
  ShardedCheckpoint ck;
  auto ws = WeightStore::open_dir(ck.dir.path());
  EXPECT_EQ(ws.files().size(), 2u);
  EXPECT_EQ(ws.names(), (std::vector<std::string>{"model.a", "model.b", "model.c"}));
  const auto& c = ws.get("model.c");
  EXPECT_EQ(c.dtype, DType::BF16);
  EXPECT_EQ(std::memcmp(c.data, ck.c.data(), 6), 0);
  EXPECT_NE(c.file.find("model-00002-of-00002.safetensors"), std::string::npos);
  EXPECT_EQ(std::memcmp(ws.get("model.a").data, ck.a.data(), 24), 0);

  const WeightStore moved = std::move(ws);  // the name index survives a move
  EXPECT_EQ(std::memcmp(moved.get("model.b").data, ck.b.data(), 8), 0);
}

TEST(Safetensors, ShardedErrors) {
  {
    ShardedCheckpoint ck;
    fs::remove(ck.dir / "model-00002-of-00002.safetensors");
    expect_contains(error_of([&] { WeightStore::open_dir(ck.dir.path()); }),
                    {"model-00002-of-00002.safetensors", "model.safetensors.index.json", "does not exist"});
  }
  {
    ShardedCheckpoint ck;
    write_safetensors_index(
        ck.dir / "model.safetensors.index.json",
        {{"model.a", "model-00001-of-00002.safetensors"}, {"model.c", "model-00001-of-00002.safetensors"}},
        0);
    expect_contains(error_of([&] { WeightStore::open_dir(ck.dir.path()); }),
                    {"model.c", "model-00001-of-00002.safetensors", "no such tensor"});
  }
  {
    ShardedCheckpoint ck;
    write_file_atomic(ck.dir / "model.safetensors.index.json", "{\"weight_map\": {\"model.a\": \"../x\"}}");
    expect_contains(error_of([&] { WeightStore::open_dir(ck.dir.path()); }), {"../x", "model.a"});
    write_file_atomic(ck.dir / "model.safetensors.index.json", "{\"weight_map\": {\"model.a\": 3}}");
    expect_contains(error_of([&] { WeightStore::open_dir(ck.dir.path()); }), {"model.a", "file name"});
    write_file_atomic(ck.dir / "model.safetensors.index.json", "{\"weight_map\": ");
    expect_contains(error_of([&] { WeightStore::open_dir(ck.dir.path()); }),
                    {"model.safetensors.index.json", "not valid JSON"});
    write_file_atomic(ck.dir / "model.safetensors.index.json", "{\"metadata\": {}}");
    expect_contains(error_of([&] { WeightStore::open_dir(ck.dir.path()); }), {"weight_map"});
  }
}

TEST(Safetensors, DirectoryErrors) {
  test::ScratchDir dir("st-dir");
  expect_contains(error_of([&] { WeightStore::open_dir(dir / "missing"); }), {"missing", "does not exist"});
  expect_contains(error_of([&] { WeightStore::open(dir / "missing"); }), {"missing", "does not exist"});
  expect_contains(error_of([&] { WeightStore::open_dir(dir.path()); }), {"no weights found"});

  // Without an index every *.safetensors file is read; one name in two files is an error.
  SafetensorsWriter w;
  w.add_owned("x", DType::U8, {2}, {1, 2});
  w.write(dir / "one.safetensors");
  w.write(dir / "two.safetensors");
  expect_contains(error_of([&] { WeightStore::open_dir(dir.path()); }),
                  {"'x'", "one.safetensors", "two.safetensors"});
}

TEST(Safetensors, WriterRejectsBadInput) {
  SafetensorsWriter w;
  const std::vector<uint8_t> six(6);
  expect_contains(error_of([&] { w.add("a", DType::F32, {2}, six); }), {"'a'", "needs 8 bytes, got 6"});
  expect_contains(error_of([&] { w.add("a", DType::U8, {-6}, six); }), {"negative"});
  expect_contains(error_of([&] { w.add("__metadata__", DType::U8, {6}, six); }), {"invalid tensor name"});
  w.add("a", DType::U8, {2, 3}, six);
  expect_contains(error_of([&] { w.add("a", DType::U8, {6}, six); }), {"'a'", "twice"});
}

// ---- malformed files: each is an Error naming the file and, where there is one, the tensor ----

TEST(SafetensorsErrors, TooShortAndHeaderLength) {
  const std::vector<uint8_t> three = {1, 2, 3};
  expect_contains(error_of([&] { parse_safetensors(three, "f.st", nullptr); }), {"f.st", "too short"});
  auto huge = raw_file("{}", 0);
  const uint64_t n = ~0ull;
  std::memcpy(huge.data(), &n, 8);
  expect_contains(error_of([&] { parse_safetensors(huge, "f.st", nullptr); }), {"f.st", "header length"});
  auto trunc = raw_file("{}", 0);
  trunc[0] = 200;
  expect_contains(error_of([&] { parse_safetensors(trunc, "f.st", nullptr); }), {"f.st", "truncated"});
}

TEST(SafetensorsErrors, HeaderNotJson) {
  expect_contains(parse_error("{\"a\": {\"dtype\": ", 0), {"bad.safetensors", "not valid JSON"});
  expect_contains(parse_error("\xff\xfe garbage", 0), {"bad.safetensors", "not valid JSON"});
  expect_contains(parse_error("[1, 2]", 0), {"bad.safetensors", "JSON object", "array"});
  expect_contains(parse_error(std::string(100, '[') + std::string(100, ']'), 0),
                  {"bad.safetensors", "deeper"});
  expect_contains(parse_error("{\"a\": 3}", 0), {"'a'", "expected an object"});
}

TEST(SafetensorsErrors, UnknownDType) {
  expect_contains(parse_error(R"({"w": {"dtype": "F4", "shape": [2], "data_offsets": [0, 1]}})", 1),
                  {"bad.safetensors", "'w'", "unknown dtype \"F4\"", "BF16"});
  expect_contains(parse_error(R"({"w": {"shape": [2], "data_offsets": [0, 1]}})", 1), {"'w'", "dtype"});
}

TEST(SafetensorsErrors, ShapeDisagreesWithBytes) {
  expect_contains(parse_error(R"({"w": {"dtype": "BF16", "shape": [2, 3], "data_offsets": [0, 10]}})", 16),
                  {"bad.safetensors", "'w'", "[2, 3]", "needs 12 bytes", "hold 10"});
  // 2^62 * 2^62 elements overflow 64 bits: rejected, not wrapped around to a small count.
  expect_contains(
      parse_error(R"({"w": {"dtype": "U8", "shape": [4611686018427387904, 4611686018427387904, 0, 16],
                          "data_offsets": [0, 0]}})",
                  0),
      {"'w'", "> 2^64"});
  expect_contains(parse_error(R"({"w": {"dtype": "U8", "shape": [-1], "data_offsets": [0, 0]}})", 0),
                  {"'w'", "negative"});
  expect_contains(parse_error(R"({"w": {"dtype": "U8", "shape": [1.5], "data_offsets": [0, 0]}})", 0),
                  {"'w'", "integer"});
  expect_contains(parse_error(R"({"w": {"dtype": "U8", "shape": 4, "data_offsets": [0, 4]}})", 4),
                  {"'w'", "shape"});
}

TEST(SafetensorsErrors, OffsetsOutOfRangeOrOverlapping) {
  expect_contains(parse_error(R"({"w": {"dtype": "U8", "shape": [8], "data_offsets": [0, 8]}})", 4),
                  {"bad.safetensors", "'w'", "past the end", "truncated"});
  expect_contains(parse_error(R"({"w": {"dtype": "U8", "shape": [0], "data_offsets": [5, 4]}})", 8), {"'w'"});
  expect_contains(parse_error(R"({"w": {"dtype": "U8", "shape": [2], "data_offsets": [0.0, 2]}})", 8),
                  {"'w'", "data_offsets must be an integer"});
  expect_contains(parse_error(R"({"w": {"dtype": "U8", "shape": [2], "data_offsets": ["0", 2]}})", 8),
                  {"'w'", "integer"});
  expect_contains(parse_error(R"({"w": {"dtype": "U8", "shape": [2], "data_offsets": [-2, 0]}})", 8),
                  {"'w'", "negative"});
  expect_contains(parse_error(R"({"w": {"dtype": "U8", "shape": [2], "data_offsets": [0, 2, 4]}})", 8),
                  {"'w'", "data_offsets"});
  expect_contains(parse_error(R"({"a": {"dtype": "U8", "shape": [4], "data_offsets": [0, 4]},
                                 "b": {"dtype": "U8", "shape": [4], "data_offsets": [3, 7]}})",
                              8),
                  {"bad.safetensors", "'a'", "'b'", "overlap"});
  // Empty tensors take no bytes, so they overlap nothing.
  const auto ok = raw_file(R"({"a": {"dtype": "U8", "shape": [4], "data_offsets": [0, 4]},
                              "e": {"dtype": "F32", "shape": [0], "data_offsets": [2, 2]}})",
                           4);
  EXPECT_EQ(parse_safetensors(ok, "ok", nullptr).size(), 2u);
}

TEST(SafetensorsErrors, DuplicateNamesAndMetadata) {
  expect_contains(parse_error(R"({"w": {"dtype": "U8", "shape": [1], "data_offsets": [0, 1]},
                                 "w": {"dtype": "U8", "shape": [1], "data_offsets": [1, 2]}})",
                              2),
                  {"bad.safetensors", "'w'", "twice"});
  expect_contains(parse_error(R"({"__metadata__": {"format": 1}})", 0), {"__metadata__", "format", "string"});
  expect_contains(parse_error(R"({"__metadata__": [1]})", 0), {"__metadata__"});
  expect_contains(parse_error(R"({"": {"dtype": "U8", "shape": [1], "data_offsets": [0, 1]}})", 1),
                  {"empty name"});
  std::map<std::string, std::string> md;
  const auto ok = raw_file(R"({"__metadata__": {"format": "pt"}, "w": {"dtype": "U8", "shape": [1],
                              "data_offsets": [0, 1]}})",
                           1);
  EXPECT_EQ(parse_safetensors(ok, "ok", &md).size(), 1u);
  EXPECT_EQ(md.at("format"), "pt");
}

TEST(SafetensorsErrors, TruncatedRealFileNamesFileAndTensor) {
  test::ScratchDir dir("st-trunc");
  const auto src = test::data_dir() / "llama2c_aidreams260K/hf/model.safetensors";
  const MappedFile mf(src);
  std::vector<uint8_t> bytes(mf.data(), mf.data() + mf.size() - 100);
  const auto path = dir / "model.safetensors";
  write_bytes(path, bytes);
  // The last tensor in the file is model.norm.weight.
  expect_contains(error_of([&] { SafetensorsFile::open(path); }),
                  {path.string(), "'model.norm.weight'", "past the end"});
  expect_contains(error_of([&] { WeightStore::open_dir(dir.path()); }), {path.string(), "model.norm.weight"});
  bytes.resize(1000);  // inside the header
  write_bytes(path, bytes);
  expect_contains(error_of([&] { SafetensorsFile::open(path); }), {path.string(), "truncated"});
  write_bytes(path, {});
  expect_contains(error_of([&] { SafetensorsFile::open(path); }), {path.string(), "too short"});
}

}  // namespace
}  // namespace nibble
