#include "format/safetensors.h"

#include <algorithm>
#include <bit>
#include <cstring>
#include <nlohmann/json.hpp>
#include <numeric>
#include <set>

#include "core/error.h"

namespace nibble {
namespace {

static_assert(std::endian::native == std::endian::little, "safetensors stores little-endian data");

using json = nlohmann::json;

// HF safetensors rejects headers above 100 MB (MAX_HEADER_SIZE); a larger length field means a
// corrupt file or not a safetensors file at all, and must not make us allocate or scan gigabytes.
constexpr uint64_t kMaxHeaderBytes = 100'000'000;
// A valid header nests 3 levels deep ({name: {shape: [...]}}); deeper JSON is corrupt.
constexpr int kMaxHeaderDepth = 8;

std::string shape_str(const std::vector<int64_t>& shape) {
  return fmt::format("[{}]", fmt::join(shape, ", "));
}

std::string known_dtypes() {
  std::string s;
  for (DType t : {DType::F64, DType::F32, DType::F16, DType::BF16, DType::F8_E4M3, DType::U8, DType::I8,
                  DType::I16, DType::I32, DType::I64, DType::BOOL}) {
    if (!s.empty()) s += ", ";
    s += dtype_name(t);
  }
  return s;
}

// numel(shape) * elem_size, or nullopt when it does not fit in 64 bits.
std::optional<uint64_t> checked_nbytes(const std::vector<int64_t>& shape, size_t elem_size) {
  uint64_t n = elem_size;
  for (int64_t d : shape) {
    if (__builtin_mul_overflow(n, static_cast<uint64_t>(d), &n)) return std::nullopt;
  }
  return n;
}

// A JSON value that must be a non-negative integer (shape dims, data offsets).
uint64_t json_uint(const json& v, const std::string& label, const std::string& name, const char* what) {
  if (v.is_number_unsigned()) return v.get<uint64_t>();
  if (v.is_number_integer())
    fail("{}: tensor '{}': {} must not be negative, found {}", label, name, what, v.dump());
  fail("{}: tensor '{}': {} must be an integer, found {}", label, name, what, v.dump());
}

// Parses the header, rejecting duplicate tensor names (nlohmann keeps only the last one) and
// nesting deeper than any valid header.
json parse_header_json(std::string_view text, const std::string& label) {
  std::set<std::string> seen;
  auto check = [&](int depth, json::parse_event_t event, json& parsed) {
    if (depth > kMaxHeaderDepth) fail("{}: header JSON nests deeper than {} levels", label, kMaxHeaderDepth);
    if (event == json::parse_event_t::key && depth == 1) {
      const auto& key = parsed.get_ref<const std::string&>();
      if (!seen.insert(key).second) fail("{}: tensor '{}' appears twice in the header", label, key);
    }
    return true;
  };
  try {
    return json::parse(text, check);
  } catch (const json::exception& e) {
    fail("{}: header is not valid JSON: {}", label, e.what());
  }
}

TensorInfo parse_entry(const std::string& name, const json& v, const std::string& label, uint64_t data_size,
                       const uint8_t* data_begin) {
  if (name.empty()) fail("{}: a tensor has an empty name", label);
  if (!v.is_object())
    fail("{}: tensor '{}': expected an object with dtype, shape, data_offsets, found {}", label, name,
         v.type_name());
  TensorInfo t;
  t.name = name;
  t.file = label;

  const auto dt = v.find("dtype");
  if (dt == v.end() || !dt->is_string()) fail("{}: tensor '{}': missing string field \"dtype\"", label, name);
  const auto dtype = dtype_from_name(dt->get_ref<const std::string&>());
  if (!dtype) {
    fail("{}: tensor '{}': unknown dtype {} (supported: {})", label, name, dt->dump(), known_dtypes());
  }
  t.dtype = *dtype;

  const auto sh = v.find("shape");
  if (sh == v.end() || !sh->is_array()) fail("{}: tensor '{}': missing array field \"shape\"", label, name);
  for (const auto& d : *sh) {
    const uint64_t dim = json_uint(d, label, name, "a shape dimension");
    if (dim > static_cast<uint64_t>(INT64_MAX))
      fail("{}: tensor '{}': shape dimension {} is too large", label, name, dim);
    t.shape.push_back(static_cast<int64_t>(dim));
  }

  const auto off = v.find("data_offsets");
  if (off == v.end() || !off->is_array() || off->size() != 2) {
    fail("{}: tensor '{}': expected \"data_offsets\": [begin, end]", label, name);
  }
  const uint64_t begin = json_uint((*off)[0], label, name, "data_offsets");
  const uint64_t end = json_uint((*off)[1], label, name, "data_offsets");
  if (begin > end)
    fail("{}: tensor '{}': data_offsets [{}, {}] end before they begin", label, name, begin, end);
  if (end > data_size) {
    fail(
        "{}: tensor '{}': data_offsets [{}, {}] run past the end of the data ({} bytes): file truncated or "
        "corrupt",
        label, name, begin, end, data_size);
  }
  const auto nbytes = checked_nbytes(t.shape, dtype_size(t.dtype));
  if (!nbytes || *nbytes != end - begin) {
    fail("{}: tensor '{}': shape {} of {} needs {} bytes but data_offsets [{}, {}] hold {}", label, name,
         shape_str(t.shape), dtype_name(t.dtype), nbytes ? fmt::to_string(*nbytes) : std::string("> 2^64"),
         begin, end, end - begin);
  }
  t.data = data_begin + begin;
  t.nbytes = static_cast<size_t>(end - begin);
  return t;
}

void parse_metadata(const json& v, const std::string& label, std::map<std::string, std::string>* metadata) {
  if (!v.is_object())
    fail("{}: \"__metadata__\" must be an object of strings, found {}", label, v.type_name());
  for (const auto& [key, value] : v.items()) {
    if (!value.is_string())
      fail("{}: \"__metadata__\" entry '{}' must be a string, found {}", label, key, value.dump());
    if (metadata) (*metadata)[key] = value.get<std::string>();
  }
}

}  // namespace

int64_t TensorInfo::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;  // fits: validated against the byte count on parse
  return n;
}

std::vector<TensorInfo> parse_safetensors(std::span<const uint8_t> bytes, const std::string& file_label,
                                          std::map<std::string, std::string>* metadata) {
  const std::string& label = file_label;
  if (bytes.size() < 8) {
    fail("{}: file is {} bytes, too short for a safetensors file (an 8-byte header length comes first)",
         label, bytes.size());
  }
  uint64_t header_len = 0;
  std::memcpy(&header_len, bytes.data(), 8);
  if (header_len > kMaxHeaderBytes) {
    fail("{}: header length {} exceeds the {} byte limit: not a safetensors file or corrupt", label,
         header_len, kMaxHeaderBytes);
  }
  if (header_len > bytes.size() - 8) {
    fail("{}: truncated: header length is {} bytes but only {} bytes follow", label, header_len,
         bytes.size() - 8);
  }
  const std::string_view text(reinterpret_cast<const char*>(bytes.data()) + 8, header_len);
  const json header = parse_header_json(text, label);
  if (!header.is_object()) fail("{}: header must be a JSON object, found {}", label, header.type_name());

  const uint8_t* data_begin = bytes.data() + 8 + header_len;
  const uint64_t data_size = bytes.size() - 8 - header_len;
  std::vector<TensorInfo> tensors;
  for (const auto& [name, value] : header.items()) {
    if (name == "__metadata__") {
      parse_metadata(value, label, metadata);
      continue;
    }
    tensors.push_back(parse_entry(name, value, label, data_size, data_begin));
  }

  // File order; then no two non-empty byte ranges may share a byte.
  std::sort(tensors.begin(), tensors.end(), [](const TensorInfo& a, const TensorInfo& b) {
    return a.data != b.data ? a.data < b.data : a.name < b.name;
  });
  const TensorInfo* prev = nullptr;
  for (const auto& t : tensors) {
    if (t.nbytes == 0) continue;
    if (prev && t.data < prev->data + prev->nbytes) {
      fail("{}: tensors '{}' and '{}' overlap: data ranges [{}, {}) and [{}, {})", label, prev->name, t.name,
           prev->data - data_begin, prev->data - data_begin + prev->nbytes, t.data - data_begin,
           t.data - data_begin + t.nbytes);
    }
    prev = &t;
  }
  return tensors;
}

SafetensorsFile SafetensorsFile::open(const std::filesystem::path& path) {
  SafetensorsFile f;
  f.file_ = std::make_shared<MappedFile>(path);
  f.tensors_ = parse_safetensors(f.file_->bytes(), path.string(), &f.metadata_);
  for (size_t i = 0; i < f.tensors_.size(); ++i) f.index_[f.tensors_[i].name] = i;
  return f;
}

const TensorInfo* SafetensorsFile::find(const std::string& name) const {
  const auto it = index_.find(name);
  return it == index_.end() ? nullptr : &tensors_[it->second];
}

// ---- WeightStore ----

namespace {

constexpr const char* kIndexName = "model.safetensors.index.json";

// Shard file names from an index's weight_map, in first-seen order; checks each entry's type.
std::vector<std::string> index_shards(const json& index, const std::filesystem::path& index_path) {
  const std::string label = index_path.string();
  if (!index.is_object()) fail("{}: expected a JSON object, found {}", label, index.type_name());
  const auto wm = index.find("weight_map");
  if (wm == index.end() || !wm->is_object()) fail("{}: missing object \"weight_map\"", label);
  if (wm->empty()) fail("{}: \"weight_map\" is empty", label);
  std::vector<std::string> shards;
  for (const auto& [tensor, shard] : wm->items()) {
    if (!shard.is_string()) {
      fail("{}: weight_map entry '{}' must be a file name string, found {}", label, tensor, shard.dump());
    }
    const auto& s = shard.get_ref<const std::string&>();
    // Shards live beside the index; a path would let an index point anywhere on the disk.
    if (s.empty() || s.find_first_of(std::string_view("/\0", 2)) != std::string::npos || s == "." ||
        s == "..") {
      fail("{}: weight_map entry '{}' names shard '{}', expected a file name in the same directory", label,
           tensor, s);
    }
    if (std::find(shards.begin(), shards.end(), s) == shards.end()) shards.push_back(s);
  }
  return shards;
}

}  // namespace

WeightStore WeightStore::open(const std::filesystem::path& path) {
  std::error_code ec;
  const auto st = std::filesystem::status(path, ec);
  if (!std::filesystem::exists(st))
    fail("{} does not exist (expected a model directory or a .safetensors file)", path.string());
  return std::filesystem::is_directory(st) ? open_dir(path) : open_file(path);
}

WeightStore WeightStore::open_file(const std::filesystem::path& file) {
  WeightStore ws;
  ws.dir_ = file.has_parent_path() ? file.parent_path() : std::filesystem::path(".");
  ws.files_.push_back(SafetensorsFile::open(file));
  ws.index_files();
  return ws;
}

WeightStore WeightStore::open_dir(const std::filesystem::path& dir) {
  std::error_code ec;
  if (!std::filesystem::exists(dir, ec)) fail("model directory {} does not exist", dir.string());
  if (!std::filesystem::is_directory(dir, ec))
    fail("{} is not a directory (expected a model directory)", dir.string());
  WeightStore ws;
  ws.dir_ = dir;

  const auto index_path = dir / kIndexName;
  if (std::filesystem::exists(index_path, ec)) {
    json index;
    try {
      index = json::parse(read_text_file(index_path));
    } catch (const json::exception& e) {
      fail("{}: not valid JSON: {}", index_path.string(), e.what());
    }
    const auto shards = index_shards(index, index_path);
    for (const auto& shard : shards) {
      const auto p = dir / shard;
      if (!std::filesystem::is_regular_file(p, ec)) {
        fail("shard {} listed in {} does not exist", p.string(), index_path.string());
      }
      ws.files_.push_back(SafetensorsFile::open(p));
    }
    for (const auto& [tensor, shard] : index["weight_map"].items()) {
      const size_t i = std::find(shards.begin(), shards.end(), shard.get<std::string>()) - shards.begin();
      if (!ws.files_[i].find(tensor)) {
        fail("{} lists tensor '{}' in {}, but that shard has no such tensor", index_path.string(), tensor,
             ws.files_[i].path().string());
      }
    }
  } else if (std::filesystem::exists(dir / "model.safetensors", ec)) {
    ws.files_.push_back(SafetensorsFile::open(dir / "model.safetensors"));
  } else {
    std::vector<std::filesystem::path> paths;
    for (const auto& e : std::filesystem::directory_iterator(dir, ec)) {
      if (e.path().extension() == ".safetensors") paths.push_back(e.path());
    }
    if (paths.empty()) {
      fail("{}: no weights found (expected model.safetensors, {} or *.safetensors files)", dir.string(),
           kIndexName);
    }
    std::sort(paths.begin(), paths.end());
    for (const auto& p : paths) ws.files_.push_back(SafetensorsFile::open(p));
  }
  ws.index_files();
  return ws;
}

void WeightStore::index_files() {
  by_name_.clear();
  for (const auto& f : files_) {
    for (const auto& t : f.tensors()) {
      const auto [it, inserted] = by_name_.emplace(t.name, &t);
      if (!inserted) fail("tensor '{}' is stored twice: in {} and in {}", t.name, it->second->file, t.file);
    }
  }
}

const TensorInfo* WeightStore::find(const std::string& name) const {
  const auto it = by_name_.find(name);
  return it == by_name_.end() ? nullptr : it->second;
}

const TensorInfo& WeightStore::get(const std::string& name) const {
  const TensorInfo* t = find(name);
  if (!t) fail("tensor '{}' not found in {}", name, dir_.string());
  return *t;
}

std::vector<std::string> WeightStore::names() const {
  std::vector<std::string> out;
  out.reserve(by_name_.size());
  for (const auto& [name, t] : by_name_) out.push_back(name);
  return out;
}

// ---- SafetensorsWriter ----

void SafetensorsWriter::add(std::string name, DType dtype, std::vector<int64_t> shape,
                            std::span<const uint8_t> data) {
  if (name.empty() || name == "__metadata__") fail("safetensors writer: invalid tensor name '{}'", name);
  for (const auto& e : entries_) {
    if (e.name == name) fail("safetensors writer: tensor '{}' added twice", name);
  }
  for (int64_t d : shape) {
    if (d < 0)
      fail("safetensors writer: tensor '{}' has a negative dimension in shape {}", name, shape_str(shape));
  }
  const auto nbytes = checked_nbytes(shape, dtype_size(dtype));
  if (!nbytes || *nbytes != data.size()) {
    fail("safetensors writer: tensor '{}' {} {} needs {} bytes, got {}", name, dtype_name(dtype),
         shape_str(shape), nbytes ? fmt::to_string(*nbytes) : std::string("> 2^64"), data.size());
  }
  entries_.push_back({std::move(name), dtype, std::move(shape), data, nullptr});
}

void SafetensorsWriter::add_owned(std::string name, DType dtype, std::vector<int64_t> shape,
                                  std::vector<uint8_t> data) {
  auto owned = std::make_shared<std::vector<uint8_t>>(std::move(data));
  add(std::move(name), dtype, std::move(shape), *owned);
  entries_.back().owned = std::move(owned);
}

uint64_t SafetensorsWriter::data_bytes() const {
  uint64_t n = 0;
  for (const auto& e : entries_) n += e.data.size();
  return n;
}

void SafetensorsWriter::write(const std::filesystem::path& path) const {
  // Largest elements first, as HF safetensors does: with no gaps between tensors (its reader
  // rejects gaps), every tensor then starts at a multiple of its own element size.
  std::vector<size_t> order(entries_.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    return dtype_size(entries_[a].dtype) > dtype_size(entries_[b].dtype);
  });

  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata_.empty()) header["__metadata__"] = metadata_;
  uint64_t offset = 0;
  for (size_t i : order) {
    const auto& e = entries_[i];
    header[e.name] = {{"dtype", dtype_name(e.dtype)},
                      {"shape", e.shape},
                      {"data_offsets", {offset, offset + e.data.size()}}};
    offset += e.data.size();
  }
  std::string text;
  try {
    text = header.dump();
  } catch (const nlohmann::json::exception& e) {
    fail("cannot write {}: {}", path.string(), e.what());
  }
  // Pad with spaces so that the data start (8 + header length) is 8-byte aligned.
  text.append((8 - text.size() % 8) % 8, ' ');

  AtomicFileWriter w(path);
  const uint64_t len = text.size();
  w.write(&len, sizeof len);
  w.write(text);
  for (size_t i : order) w.write(entries_[i].data.data(), entries_[i].data.size());
  w.commit();
}

void write_safetensors_index(const std::filesystem::path& path,
                             const std::map<std::string, std::string>& weight_map, uint64_t total_size) {
  json index = {{"metadata", {{"total_size", total_size}}}, {"weight_map", weight_map}};
  write_file_atomic(path, index.dump(2) + "\n");
}

}  // namespace nibble
