// nibble: one program, one subcommand per job. See README.md.
#include <fmt/format.h>

#include <cstdio>
#include <exception>

#include "commands.h"
#include "core/error.h"

int main(int argc, char** argv) {
  CLI::App app{"nibble: run and fine-tune Qwen3 models with NVFP4 weights", "nibble"};
  app.require_subcommand(1);
  app.fallthrough(false);

  // One line per subcommand (apps/nibble/cmd_<name>.cpp).
  nibble::app::add_bench_command(app);
  nibble::app::add_guard_command(app);
  nibble::app::add_tokenize_command(app);
  nibble::app::add_quantize_command(app);
  nibble::app::add_inspect_command(app);
  nibble::app::add_template_command(app);
  nibble::app::add_generate_command(app);
  nibble::app::add_chat_command(app);

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  } catch (const nibble::Error& e) {
    std::fflush(stdout);
    fmt::print(stderr, "nibble: error: {}\n", e.what());
    return 1;
  } catch (const std::exception& e) {
    std::fflush(stdout);
    fmt::print(stderr, "nibble: error: {}\n", e.what());
    return 1;
  }
  return 0;
}
