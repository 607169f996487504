// Randomized robustness test for the safetensors reader: tens of thousands of corrupted files
// (truncations at every length, bit flips, header text mutations, random headers, random bytes).
// Each must either parse to tensors that lie inside the file, sized numel * dtype size and not
// overlapping, or throw nibble::Error; never crash, hang or throw anything else. Build it once with
// -fsanitize=address,undefined to check for out-of-bounds reads as well.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/file.h"
#include "format/safetensors.h"
#include "support/test_support.h"

namespace nibble {
namespace {

struct Outcome {
  int parsed = 0;
  int rejected = 0;
};

// Returns "" when `bytes` was handled correctly, else what went wrong.
std::string check_one(const std::vector<uint8_t>& bytes, Outcome& outcome) {
  std::vector<TensorInfo> tensors;
  std::map<std::string, std::string> metadata;
  try {
    tensors = parse_safetensors(bytes, "fuzz.safetensors", &metadata);
  } catch (const Error& e) {
    if (std::string(e.what()).find("fuzz.safetensors") == std::string::npos) return "error without file name";
    ++outcome.rejected;
    return "";
  } catch (const std::exception& e) {
    return std::string("unexpected exception type: ") + e.what();
  }
  ++outcome.parsed;
  uint64_t header_len = 0;
  std::memcpy(&header_len, bytes.data(), 8);
  const uint8_t* data_begin = bytes.data() + 8 + header_len;
  const uint8_t* file_end = bytes.data() + bytes.size();
  const uint8_t* prev_end = data_begin;
  uint64_t checksum = 0;
  for (const auto& t : tensors) {
    if (t.data < data_begin || t.data > file_end || t.nbytes > static_cast<size_t>(file_end - t.data)) {
      return "tensor '" + t.name + "' lies outside the data block";
    }
    uint64_t expect = dtype_size(t.dtype);
    for (int64_t d : t.shape) {
      if (d < 0 || __builtin_mul_overflow(expect, static_cast<uint64_t>(d), &expect))
        return "bad shape " + t.name;
    }
    if (expect != t.nbytes) return "byte count mismatch for " + t.name;
    if (t.nbytes > 0) {
      if (t.data < prev_end) return "overlap at " + t.name;
      prev_end = t.data + t.nbytes;
    }
    for (size_t i = 0; i < t.nbytes; ++i) checksum += t.data[i];  // touch every byte (ASan)
  }
  return checksum == ~0ull ? "unreachable" : "";
}

// A small valid file: several dtypes, a scalar, an empty tensor and metadata.
std::vector<uint8_t> seed_file() {
  test::ScratchDir dir("fuzz");
  SafetensorsWriter w;
  w.add_owned("model.embed_tokens.weight", DType::BF16, {4, 3}, std::vector<uint8_t>(24, 0x3f));
  w.add_owned("model.norm.weight", DType::F32, {3}, std::vector<uint8_t>(12, 0x40));
  w.add_owned("layer.0.weight", DType::U8, {2, 2}, {1, 2, 3, 4});
  w.add_owned("layer.0.weight_scale", DType::F8_E4M3, {2, 1}, {0x38, 0x38});
  w.add_owned("layer.0.weight_scale_2", DType::F32, {}, std::vector<uint8_t>(4, 1));
  w.add_owned("ids", DType::I64, {2}, std::vector<uint8_t>(16, 7));
  w.add_owned("empty", DType::F16, {0, 5}, {});
  w.set_metadata("format", "pt");
  w.write(dir / "seed.safetensors");
  const MappedFile f(dir / "seed.safetensors");
  return {f.data(), f.data() + f.size()};
}

std::vector<uint8_t> with_header(const std::string& header, const std::vector<uint8_t>& data) {
  std::vector<uint8_t> v(8 + header.size());
  const uint64_t n = header.size();
  std::memcpy(v.data(), &n, 8);
  std::copy(header.begin(), header.end(), v.begin() + 8);
  v.insert(v.end(), data.begin(), data.end());
  return v;
}

class SafetensorsFuzz : public ::testing::Test {
 protected:
  void SetUp() override {
    seed_ = seed_file();
    uint64_t n = 0;
    std::memcpy(&n, seed_.data(), 8);
    header_.assign(seed_.begin() + 8, seed_.begin() + 8 + static_cast<ptrdiff_t>(n));
    data_.assign(seed_.begin() + 8 + static_cast<ptrdiff_t>(n), seed_.end());
    Outcome o;
    ASSERT_EQ(check_one(seed_, o), "");
    ASSERT_EQ(o.parsed, 1);
  }
  std::vector<uint8_t> seed_;
  std::string header_;
  std::vector<uint8_t> data_;
  std::mt19937_64 rng_{20240601};
};

TEST_F(SafetensorsFuzz, TruncationAtEveryLength) {
  Outcome o;
  for (size_t len = 0; len < seed_.size(); ++len) {
    const std::vector<uint8_t> cut(seed_.begin(), seed_.begin() + static_cast<ptrdiff_t>(len));
    ASSERT_EQ(check_one(cut, o), "") << "length " << len;
  }
  // Every proper prefix loses either header bytes or the last tensor's bytes.
  EXPECT_EQ(o.parsed, 0);
  EXPECT_EQ(o.rejected, static_cast<int>(seed_.size()));
}

TEST_F(SafetensorsFuzz, BitFlips) {
  Outcome o;
  for (int iter = 0; iter < 20000; ++iter) {
    auto bytes = seed_;
    const int flips = 1 + static_cast<int>(rng_() % 4);
    for (int f = 0; f < flips; ++f) {
      // Mostly in the length field and header, where flips change how the file is read.
      const size_t limit = rng_() % 5 == 0 ? bytes.size() : 8 + header_.size();
      bytes[rng_() % limit] ^= static_cast<uint8_t>(1u << (rng_() % 8));
    }
    ASSERT_EQ(check_one(bytes, o), "") << "iteration " << iter;
  }
  EXPECT_GT(o.rejected, 1000);
  EXPECT_GT(o.parsed, 100);  // flips in names, metadata or data leave a valid file
}

// Edits of the header text with the length field fixed up, so the JSON and the field checks are
// what gets exercised, not just the length check.
TEST_F(SafetensorsFuzz, HeaderMutations) {
  const std::string alphabet = "{}[],:\"0123456789-+.eE \\/xF8UIBOLdtypeshaoffs_";
  const std::vector<std::string> numbers = {"0",
                                            "1",
                                            "-1",
                                            "7",
                                            "1.5",
                                            "1e3",
                                            "-0",
                                            "4294967296",
                                            "9223372036854775807",
                                            "9223372036854775808",
                                            "18446744073709551615",
                                            "18446744073709551616",
                                            "1e400"};
  const std::vector<std::string> dtypes = {"F64", "F32", "F16",  "BF16", "F8_E4M3", "U8",   "I8", "I16",
                                           "I32", "I64", "BOOL", "F4",   "",        "bf16", "U64"};
  Outcome o;
  for (int iter = 0; iter < 30000; ++iter) {
    std::string h = header_;
    const int edits = 1 + static_cast<int>(rng_() % 3);
    for (int e = 0; e < edits && !h.empty(); ++e) {
      const size_t pos = rng_() % h.size();
      switch (rng_() % 7) {
        case 0:
          h[pos] = alphabet[rng_() % alphabet.size()];
          break;
        case 1:
          h.insert(pos, 1, alphabet[rng_() % alphabet.size()]);
          break;
        case 2:
          h.erase(pos, 1 + rng_() % 8);
          break;
        case 3:
          h.insert(pos, h.substr(rng_() % h.size(), 1 + rng_() % 40));
          break;
        case 4: {  // replace the number starting at or after pos
          const size_t b = h.find_first_of("0123456789", pos);
          if (b == std::string::npos) break;
          const size_t end = h.find_first_not_of("0123456789", b);
          h.replace(b, end == std::string::npos ? std::string::npos : end - b,
                    numbers[rng_() % numbers.size()]);
          break;
        }
        case 5: {  // swap a dtype
          const size_t b = h.find("\"dtype\":\"", pos);
          if (b == std::string::npos) break;
          const size_t s = b + 9, end = h.find('"', s);
          h.replace(s, end - s, dtypes[rng_() % dtypes.size()]);
          break;
        }
        default:
          h[pos] = static_cast<char>(rng_());  // any byte, invalid UTF-8 included
      }
    }
    auto data = data_;
    if (rng_() % 4 == 0) data.resize(rng_() % (data.size() + 16), 0x55);
    ASSERT_EQ(check_one(with_header(h, data), o), "") << "iteration " << iter << " header: " << h;
  }
  EXPECT_GT(o.rejected, 1000);
  EXPECT_GT(o.parsed, 100);
}

// Headers built from random pieces: valid and invalid dtypes, shapes and offsets.
TEST_F(SafetensorsFuzz, RandomHeaders) {
  const std::vector<std::string> dims = {
      "0", "1", "2", "3", "16", "-1", "2.0", "\"4\"", "null", "4611686018427387904", "18446744073709551615"};
  const std::vector<std::string> dtypes = {"\"F32\"",  "\"BF16\"", "\"U8\"", "\"I64\"",
                                           "\"BOOL\"", "\"X\"",    "7"};
  Outcome o;
  for (int iter = 0; iter < 10000; ++iter) {
    const int ntensors = static_cast<int>(rng_() % 5);
    const uint64_t data_size = rng_() % 80;
    std::string h = "{";
    uint64_t cursor = 0;
    for (int t = 0; t < ntensors; ++t) {
      if (t) h += ",";
      const bool unique = rng_() % 8 != 0;
      h += "\"t" + std::to_string(unique ? t : 0) + "\":{\"dtype\":" + dtypes[rng_() % dtypes.size()] +
           ",\"shape\":[";
      const int rank = static_cast<int>(rng_() % 4);
      for (int r = 0; r < rank; ++r) h += (r ? "," : "") + dims[rng_() % dims.size()];
      // Offsets: usually consecutive small ranges, sometimes anything.
      const uint64_t len = rng_() % 24;
      uint64_t b = cursor, e = cursor + len;
      if (rng_() % 5 == 0) b = rng_() % 100, e = rng_() % 100;
      cursor = e;
      h += "],\"data_offsets\":[" + std::to_string(b) + "," + std::to_string(e) + "]}";
    }
    if (rng_() % 4 == 0) h += std::string(ntensors ? "," : "") + "\"__metadata__\":{\"k\":\"v\"}";
    h += "}";
    ASSERT_EQ(check_one(with_header(h, std::vector<uint8_t>(data_size, 1)), o), "")
        << "iteration " << iter << " header: " << h;
  }
  EXPECT_GT(o.rejected, 1000);
  EXPECT_GT(o.parsed, 500);
}

TEST_F(SafetensorsFuzz, RandomBytes) {
  Outcome o;
  for (int iter = 0; iter < 5000; ++iter) {
    std::vector<uint8_t> bytes(rng_() % 200);
    for (auto& b : bytes) b = static_cast<uint8_t>(rng_());
    if (bytes.size() >= 8 && rng_() % 2) {  // a plausible header length, random JSON-ish text
      const uint64_t n = rng_() % (bytes.size() - 7);
      std::memcpy(bytes.data(), &n, 8);
      if (n > 0) bytes[8] = '{';
    }
    ASSERT_EQ(check_one(bytes, o), "") << "iteration " << iter;
  }
  EXPECT_EQ(o.parsed + o.rejected, 5000);
}

}  // namespace
}  // namespace nibble
