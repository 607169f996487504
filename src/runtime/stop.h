// defines: StopChecker (end of generation on an eos id or a user stop string) and the eos id set.
//
// Stop strings are matched on the decoded text, across token boundaries. The streamed output
// holds back only the tail that could still grow into a stop string, so no part of a stop string
// is ever shown, and text that can no longer match is shown at once.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace nibble {

struct ModelConfig;
struct GenerationConfig;

class StopChecker {
 public:
  StopChecker(std::vector<int32_t> eos_ids, std::vector<std::string> stop_strings);

  bool is_eos(int32_t id) const;
  const std::vector<int32_t>& eos_ids() const { return eos_ids_; }
  bool has_stop_strings() const { return !stops_.empty(); }

  // Appends newly decoded text and returns what is safe to show now. When a stop string appears,
  // returns the text before it, stopped() turns true and later calls return "".
  std::string push(std::string_view text);
  // End of generation without a stop string: the held-back tail.
  std::string flush();

  bool stopped() const { return stopped_; }
  const std::string& matched() const { return matched_; }  // the stop string that ended it
  const std::string& emitted() const { return emitted_; }  // all text returned so far

 private:
  std::vector<int32_t> eos_ids_;
  std::vector<std::string> stops_;
  std::string pending_;  // decoded text not yet returned (a possible stop-string prefix)
  std::string emitted_;
  std::string matched_;
  bool stopped_ = false;
};

// eos ids of generation_config.json together with config.json's (deduplicated, in that order).
std::vector<int32_t> collect_eos_ids(const ModelConfig& config, const GenerationConfig& gen);

}  // namespace nibble
