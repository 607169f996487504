// defines: reading safetensors files (mmap, no copies), sharded checkpoints
// (model.safetensors.index.json), and an atomic safetensors writer.
//
// Format (https://github.com/huggingface/safetensors): u64 little-endian header length N, then N
// bytes of JSON {"name": {"dtype": "BF16", "shape": [..], "data_offsets": [begin, end]}, ...,
// "__metadata__": {str: str}}, then the data; offsets are relative to the end of the header.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "core/file.h"

namespace nibble {

// A read-only view of one stored tensor; `data` points into a mapped file.
struct TensorInfo {
  std::string name;
  DType dtype = DType::F32;
  std::vector<int64_t> shape;
  const uint8_t* data = nullptr;
  size_t nbytes = 0;
  std::string file;  // file name the tensor lives in (for messages)

  int64_t numel() const;
};

// One .safetensors file, validated on open: header JSON, known dtypes, offsets inside the file,
// no overlapping ranges, byte count == numel * dtype size. Errors name the file and the tensor.
class SafetensorsFile {
 public:
  static SafetensorsFile open(const std::filesystem::path& path);

  const std::vector<TensorInfo>& tensors() const { return tensors_; }  // in file order
  const TensorInfo* find(const std::string& name) const;
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  const std::filesystem::path& path() const { return file_->path(); }

 private:
  std::shared_ptr<MappedFile> file_;
  std::vector<TensorInfo> tensors_;
  std::map<std::string, size_t> index_;
  std::map<std::string, std::string> metadata_;
};

// Parses and validates a header given the whole file's bytes; used by SafetensorsFile::open and
// by the fuzz test. `file_label` is used in error messages.
std::vector<TensorInfo> parse_safetensors(std::span<const uint8_t> bytes, const std::string& file_label,
                                          std::map<std::string, std::string>* metadata);

// All tensors of a model directory: the shards listed by model.safetensors.index.json (each shard
// mapped once), else model.safetensors, else every *.safetensors file. A tensor name may appear in
// one file only. Move-only: the name index points into the files it holds.
class WeightStore {
 public:
  WeightStore() = default;
  WeightStore(WeightStore&&) = default;
  WeightStore& operator=(WeightStore&&) = default;
  WeightStore(const WeightStore&) = delete;
  WeightStore& operator=(const WeightStore&) = delete;

  static WeightStore open_dir(const std::filesystem::path& dir);
  static WeightStore open_file(const std::filesystem::path& file);  // one .safetensors file
  // A directory (open_dir) or a single file (open_file); throws Error when `path` does not exist.
  static WeightStore open(const std::filesystem::path& path);

  const TensorInfo* find(const std::string& name) const;
  const TensorInfo& get(const std::string& name) const;  // throws Error naming the tensor and dir
  std::vector<std::string> names() const;                // sorted
  const std::vector<SafetensorsFile>& files() const { return files_; }
  const std::filesystem::path& dir() const { return dir_; }

 private:
  std::filesystem::path dir_;
  std::vector<SafetensorsFile> files_;
  std::map<std::string, const TensorInfo*> by_name_;

  void index_files();  // fills by_name_; throws Error on a name found in two files
};

// Collects tensors and writes one safetensors file atomically (temporary name, then rename).
// Data are 8-byte aligned as the format requires (the header is padded with spaces).
class SafetensorsWriter {
 public:
  // `data` must stay valid until write(); its size must equal numel(shape) * dtype_size(dtype).
  void add(std::string name, DType dtype, std::vector<int64_t> shape, std::span<const uint8_t> data);
  void add_owned(std::string name, DType dtype, std::vector<int64_t> shape, std::vector<uint8_t> data);
  void set_metadata(std::string key, std::string value) { metadata_[std::move(key)] = std::move(value); }
  uint64_t data_bytes() const;
  void write(const std::filesystem::path& path) const;

 private:
  struct Entry {
    std::string name;
    DType dtype;
    std::vector<int64_t> shape;
    std::span<const uint8_t> data;
    std::shared_ptr<std::vector<uint8_t>> owned;
  };
  std::vector<Entry> entries_;
  std::map<std::string, std::string> metadata_;
};

// Writes model.safetensors.index.json for a sharded checkpoint (atomically):
// {"metadata": {"total_size": N}, "weight_map": {tensor name: shard file name}}.
void write_safetensors_index(const std::filesystem::path& path,
                             const std::map<std::string, std::string>& weight_map, uint64_t total_size);

}  // namespace nibble
