// defines: the subcommands of the nibble program, one file each (apps/nibble/cmd_<name>.cpp).
//
// Each add_<name>_command registers a subcommand with its options and a callback. A callback
// reports a user-facing failure by throwing nibble::Error (exit 1), or CLI::RuntimeError(code)
// for a specific exit code; main() prints the message.
#pragma once

#include <CLI/CLI.hpp>

namespace nibble::app {

void add_bench_command(CLI::App& app);
void add_guard_command(CLI::App& app);
void add_generate_command(CLI::App& app);
void add_chat_command(CLI::App& app);
void add_inspect_command(CLI::App& app);
void add_quantize_command(CLI::App& app);
void add_tokenize_command(CLI::App& app);
void add_template_command(CLI::App& app);

}  // namespace nibble::app
