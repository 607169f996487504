// defines: helpers shared by the test suites: fixture paths, a scratch directory, and running the
// nibble binary as a user would (argv, stdin text) capturing stdout, stderr and the exit code.
#pragma once

#include <filesystem>
#include <functional>
#include <initializer_list>
#include <string>
#include <vector>

namespace nibble::test {

std::filesystem::path data_dir();    // tests/fixtures
std::filesystem::path repo_root();   // the repository root
std::filesystem::path nibble_bin();  // the built nibble executable

// A fresh empty directory under the system temp dir, removed by the destructor.
class ScratchDir {
 public:
  explicit ScratchDir(const std::string& tag);
  ~ScratchDir();
  const std::filesystem::path& path() const { return path_; }
  std::filesystem::path operator/(const std::string& name) const { return path_ / name; }

 private:
  std::filesystem::path path_;
};

struct RunResult {
  int exit_code = -1;  // 128 + signal when killed by a signal
  std::string out;
  std::string err;
};

// The message of the nibble::Error that `f` throws; records a test failure (and returns "") when
// it throws none.
std::string error_of(const std::function<void()>& f);
// Expects every one of `parts` to occur in `text`.
void expect_contains(const std::string& text, std::initializer_list<std::string> parts);

// Runs `nibble args...` with `stdin_text` on standard input.
RunResult run_nibble(const std::vector<std::string>& args, const std::string& stdin_text = "");
// Runs any program (argv[0] looked up in PATH).
RunResult run_program(const std::vector<std::string>& argv, const std::string& stdin_text = "");

}  // namespace nibble::test
