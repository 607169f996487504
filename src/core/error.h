// defines: nibble::Error (recoverable, user-facing failures), fail(), NIBBLE_ASSERT (our invariants).
//
// Recoverable failures (files, formats, user input, HTTP) throw nibble::Error with a message that
// says what was expected, what was found and where. The apps catch it, print it and exit non-zero.
// NIBBLE_ASSERT is for our own invariants only: it aborts with file:line.
#pragma once

#include <fmt/format.h>

#include <cstdio>
#include <cstdlib>
#include <stdexcept>
#include <string>
#include <utility>

namespace nibble {

class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

template <typename... Args>
[[noreturn]] void fail(fmt::format_string<Args...> format, Args&&... args) {
  throw Error(fmt::format(format, std::forward<Args>(args)...));
}

[[noreturn]] inline void assert_failed(const char* expr, const char* file, int line) {
  std::fprintf(stderr, "nibble: internal error: assertion `%s` failed at %s:%d\n", expr, file, line);
  std::abort();
}

}  // namespace nibble

#define NIBBLE_ASSERT(expr) \
  ((expr) ? static_cast<void>(0) : ::nibble::assert_failed(#expr, __FILE__, __LINE__))
