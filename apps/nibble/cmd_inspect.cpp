// nibble inspect: list every stored tensor of a model (name, dtype, shape, bytes) with totals by
// dtype and by kind; when the directory has a config.json, check the weights against it.
#include <fmt/format.h>

#include <filesystem>
#include <memory>
#include <string>

#include "commands.h"
#include "core/error.h"
#include "format/hf_config.h"
#include "format/inspect.h"
#include "format/safetensors.h"
#include "quant/inspect_quant.h"

namespace nibble::app {
namespace {

// config.json is optional for inspect; a broken one is reported, and the tensors still listed.
void print_config_check(const std::filesystem::path& dir, const WeightStore& store) {
  std::error_code ec;
  if (!std::filesystem::exists(dir / "config.json", ec)) {
    fmt::print("config: none (no config.json in {})\n", dir.string());
    return;
  }
  try {
    const auto config = ModelConfig::load(dir);
    fmt::print("config: {}\n", config.summary());
    const auto problems = weight_problems(config, store, check_nvfp4_linear);
    if (problems.empty()) {
      fmt::print("config check: ok, all {} tensors the config needs are present\n",
                 expected_tensors(config).size());
    } else {
      fmt::print("config check: {} problem{}:\n", problems.size(), problems.size() == 1 ? "" : "s");
      for (const auto& p : problems) fmt::print("  {}\n", p);
    }
  } catch (const Error& e) {
    fmt::print("config: error: {}\n", e.what());
  }
}

void run_inspect(const std::string& model, const std::string& error_ref) {
  const std::filesystem::path path(model);
  const WeightStore store = WeightStore::open(path);
  const auto report = inspect_weights(store);
  fmt::print("model: {} ({} file{})\n", path.string(), store.files().size(),
             store.files().size() == 1 ? "" : "s");
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) print_config_check(path, store);
  fmt::print("\n{}", format_inspect_report(report));
  // Logical weights (an NVFP4 linear's codes + scales as one) with bits per weight.
  fmt::print("\n{}", format_weight_bits(inspect_weight_bits(store)));
  if (!error_ref.empty()) {
    const WeightStore ref = WeightStore::open(error_ref);
    fmt::print("\nquantisation error against {} (worst first):\n{}", error_ref,
               format_quantization_error(quantization_error(store, ref)));
  }
}

}  // namespace

void add_inspect_command(CLI::App& app) {
  auto* cmd = app.add_subcommand(
      "inspect", "List every tensor of a model (name, dtype, shape, bytes) with totals by dtype and by kind");
  auto model = std::make_shared<std::string>();
  cmd->add_option("--model,-m", *model,
                  "Model directory (safetensors, sharded or not) or a .safetensors file")
      ->required();
  auto error_ref = std::make_shared<std::string>();
  cmd->add_option("--error", *error_ref,
                  "Reference model (the unquantised source): print each weight's quantisation error (NMSE), "
                  "worst first");
  cmd->callback([model, error_ref] { run_inspect(*model, *error_ref); });
}

}  // namespace nibble::app
