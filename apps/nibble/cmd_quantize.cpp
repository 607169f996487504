// nibble quantize: a BF16 / F16 / F32 HF checkpoint -> an NVFP4 model directory in the ModelOpt layout.
#include <fmt/format.h>

#include <cstdio>
#include <string>
#include <vector>

#include "commands.h"
#include "quant/quantize_model.h"

namespace nibble::app {
namespace {

struct QuantizeCli {
  std::string model, out, shard_size = "2GB";
  std::vector<std::string> exclude;
  bool force = false, resave = false, quiet = false;
  int threads = 0;
};

constexpr const char* kFooter = R"(
Every linear weight (*.{q,k,v,o,gate,up,down}_proj) becomes NVFP4 as NVIDIA ModelOpt quantises it:
E2M1 values, one FP8 E4M3 scale per 16 inputs, an fp32 global scale (shared by q/k/v and by
gate/up). lm_head and the embeddings keep the source precision; a linear whose input size is not
a multiple of 16 is kept too, with a warning. The output directory holds config.json (with
quantization_config), hf_quant_config.json, the safetensors shards and the source's tokenizer,
chat-template and generation files; it appears complete or not at all.

An NVFP4 source is refused unless --resave is given: then its tensors are written again
unchanged (compressed-tensors names become ModelOpt names).)";

void run(const QuantizeCli& cli) {
  QuantizeOptions o;
  o.model_dir = cli.model;
  o.out_dir = cli.out;
  o.exclude = cli.exclude;
  o.force = cli.force;
  o.resave = cli.resave;
  o.threads = cli.threads;
  o.max_shard_bytes = parse_byte_size(cli.shard_size);
  if (!cli.quiet) {
    o.progress = [](const std::string& line) {
      fmt::print(stderr, "{}\n", line);
      std::fflush(stderr);
    };
  }
  const QuantizeSummary s = quantize_model(o);
  // 4 bits per weight + one 8-bit scale per 16 weights = 4.5 bits (the global scale is negligible)
  fmt::print(
      "wrote {}: {} NVFP4 linears ({} weights at 4.5 bits), {} tensors copied, {} file(s), {:.1f} MB "
      "(source {:.1f} MB)\n",
      cli.out, s.quantized_linears, s.quantized_params, s.dense_tensors, s.shards.size(),
      s.output_bytes / 1e6, s.source_bytes / 1e6);
}

}  // namespace

void add_quantize_command(CLI::App& app) {
  auto cli = std::make_shared<QuantizeCli>();
  CLI::App* cmd =
      app.add_subcommand("quantize", "Quantise a BF16/F16/F32 HF model to NVFP4 (ModelOpt layout)");
  cmd->footer(kFooter);
  cmd->add_option("--model", cli->model, "Source HF model directory")->required();
  cmd->add_option("--out", cli->out, "Output directory (created)")->required();
  cmd->add_option("--exclude", cli->exclude,
                  "Keep modules matching this fnmatch pattern in the source precision (repeatable), "
                  "e.g. 'model.layers.35.*'");
  cmd->add_flag("--force", cli->force, "Replace a non-empty output directory");
  cmd->add_flag("--resave", cli->resave, "The source is NVFP4: write it again unchanged (ModelOpt layout)");
  cmd->add_option("--max-shard-size", cli->shard_size, "Largest safetensors file, e.g. 2GB, 500MB")
      ->capture_default_str();
  cmd->add_option("--threads", cli->threads, "Quantisation threads (0: all cores)")->capture_default_str();
  cmd->add_flag("--quiet", cli->quiet, "No progress lines");
  cmd->callback([cli] { run(*cli); });
}

}  // namespace nibble::app
