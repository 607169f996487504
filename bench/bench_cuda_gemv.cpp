// bench_cuda_gemv: the NVFP4 decode GEMVs of Qwen3-4B (batch 1) against the card's copy bandwidth.
//
//   bench_cuda_gemv [n_tokens (1..8, default 1)]
//
// Copy bandwidth: cudaMemcpyAsync device-to-device of 1 GiB, counting bytes read + written.
// Per shape: GB/s = (codes + scales bytes) / time per launch, for the FFMA kernel (the previous
// GEMV, ordinary launches) and the tensor-core kernel (linear_forward, PDL launches). Each timed
// batch launches once on each of several weight copies (> 256 MB together, so the 50 MB L2 does
// not serve them) back to back between two events; the median of 15 batches is printed.
// Chain: the decode step's GEMVs, fused (qkv multi, o + residual, gate/up + SwiGLU, down +
// residual) x 36 layers of distinct weights + the NVFP4 head, captured in one CUDA graph; median
// of 20 replays against the floor of its weight bytes at the copy bandwidth; again with each GEMV
// prefetching the next one's weights into L2 (cuda::L2Prefetch). "L2-resident": the same launches
// on one weight copy, which stays in L2 (what the kernel does once its weights are prefetched). Weights are
// random bytes (scales in [2^-4, 2], finite), x random bf16: speed does not depend on the values. Rows "q+k+v
// (multi)" and "gate+up (swiglu)" time the fused launches on their own. `bench_cuda_gemv N profile`: only 3
// launches each of the head, o_proj and down_proj shapes (F32 out), for ncu --kernel-name
// regex:nvfp4_gemv_mma.
#include <fmt/format.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <random>
#include <string>
#include <vector>

#ifdef NIBBLE_HAVE_CUDA
#include <cuda_runtime.h>

#include "backend/cuda/check.cuh"
#include "backend/cuda/context.cuh"
#include "backend/cuda/linear.cuh"
#include "backend/cuda/timing.h"
#include "core/half.h"
#include "model/weight.h"

namespace {

using namespace nibble;
using bf16 = __nv_bfloat16;

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

struct Shape {
  const char* name;
  int64_t out, in;
  double bytes() const { return double(out) * in / 2 + double(out) * in / 16; }
};

// One device allocation holding `copies` NVFP4 weights of one shape.
struct WeightSet {
  cuda::DeviceBuffer codes, scales;
  std::vector<Weight> w;
  WeightSet(cuda::Context& ctx, const Shape& s, int copies, std::mt19937_64& rng) {
    const size_t cb = size_t(s.out * s.in / 2), sb = size_t(s.out * s.in / 16);
    codes = cuda::DeviceBuffer(ctx, cb * copies, "bench codes");
    scales = cuda::DeviceBuffer(ctx, sb * copies, "bench scales");
    std::vector<uint8_t> hc(cb), hs(sb);
    for (size_t i = 0; i < cb; i += 8) {  // random codes, 8 bytes per draw
      const uint64_t r = rng();
      std::memcpy(hc.data() + i, &r, std::min<size_t>(8, cb - i));
    }
    for (size_t i = 0; i < sb; ++i) hs[i] = static_cast<uint8_t>(0x20 + rng() % 0x21);  // e4m3 2^-4 .. 2
    for (int i = 0; i < copies; ++i) {
      CUDA_CHECK(cudaMemcpy(codes.get<uint8_t>() + i * cb, hc.data(), cb, cudaMemcpyHostToDevice));
      CUDA_CHECK(cudaMemcpy(scales.get<uint8_t>() + i * sb, hs.data(), sb, cudaMemcpyHostToDevice));
      w.push_back(Weight{WeightFormat::NVFP4, DType::U8, s.out, s.in, codes.get<uint8_t>() + i * cb,
                         scales.get<uint8_t>() + i * sb, 0.01f});
    }
    CUDA_CHECK(cudaDeviceSynchronize());
  }
};

// Median over `batches` of (time of `per_batch` calls of f(i)) / per_batch, in seconds.
template <typename F>
double time_per_call(cuda::Context& ctx, int per_batch, int batches, F f) {
  cudaEvent_t a, b;
  CUDA_CHECK(cudaEventCreate(&a));
  CUDA_CHECK(cudaEventCreate(&b));
  for (int i = 0; i < per_batch; ++i) f(i);  // warm-up
  std::vector<double> t;
  for (int r = 0; r < batches; ++r) {
    CUDA_CHECK(cudaEventRecord(a, ctx.stream()));
    for (int i = 0; i < per_batch; ++i) f(i);
    CUDA_CHECK(cudaEventRecord(b, ctx.stream()));
    CUDA_CHECK(cudaEventSynchronize(b));
    float ms = 0;
    CUDA_CHECK(cudaEventElapsedTime(&ms, a, b));
    t.push_back(ms * 1e-3 / per_batch);
  }
  CUDA_CHECK(cudaEventDestroy(a));
  CUDA_CHECK(cudaEventDestroy(b));
  return median(t);
}

// For ncu: three launches each of the head (F32 logits), o_proj and down_proj shapes, nothing else.
int profile(int64_t n) {
  cuda::Context ctx(0);
  std::mt19937_64 rng(7);
  const Shape shapes[3] = {{"lm_head", 151936, 2560}, {"o_proj", 2560, 4096}, {"down_proj", 2560, 9728}};
  cuda::DeviceBuffer xbuf(ctx, size_t(n) * 9728 * 2, "x"), ybuf(ctx, size_t(n) * 151936 * 4, "y");
  CUDA_CHECK(cudaMemset(xbuf.get(), 0x3c, size_t(n) * 9728 * 2));  // bf16 0x3c3c: ~0.0115
  for (const Shape& s : shapes) {
    WeightSet set(ctx, s, 1, rng);
    for (int i = 0; i < 3; ++i)
      cuda::linear_forward(ctx, xbuf.get<bf16>(), s.in, n, set.w[0], nullptr, ybuf.get(), DType::F32, s.out,
                           cuda::Scratch{});
    CUDA_CHECK(cudaDeviceSynchronize());
  }
  return 0;
}

int run(int64_t n) {
  cuda::Context ctx(0);
  const auto& info = ctx.info();
  int clock_khz = 0;
  CUDA_CHECK(cudaDeviceGetAttribute(&clock_khz, cudaDevAttrClockRate, info.index));
  fmt::print("device: {} ({} SMs, L2 {} MB, sm clock {} MHz), n = {} token(s)\n", info.name, info.sm_count,
             info.l2_bytes >> 20, clock_khz / 1000, n);

  // Copy bandwidth: 1 GiB device-to-device, read + write counted.
  const double copy_bw = cuda::copy_bandwidth_gbps(ctx) * 1e9;
  fmt::print("copy bandwidth (1 GiB D2D, read + write): {:.0f} GB/s\n\n", copy_bw / 1e9);

  std::mt19937_64 rng(7);
  const std::vector<Shape> shapes = {{"q_proj", 4096, 2560},    {"k_proj", 1024, 2560},
                                     {"v_proj", 1024, 2560},    {"o_proj", 2560, 4096},
                                     {"gate_proj", 9728, 2560}, {"up_proj", 9728, 2560},
                                     {"down_proj", 2560, 9728}, {"lm_head", 151936, 2560}};
  cuda::DeviceBuffer xbuf(ctx, size_t(n) * 151936 * 4 + 4096, "x");  // big enough for every x and y
  cuda::DeviceBuffer ybuf(ctx, size_t(n) * 151936 * 4 + 4096, "y");
  cuda::DeviceBuffer y2buf(ctx, size_t(n) * 151936 * 4 + 4096, "y2");
  cuda::DeviceBuffer y3buf(ctx, size_t(n) * 151936 * 4 + 4096, "y3");
  {
    std::vector<uint16_t> hx(size_t(n) * 9728);
    std::normal_distribution<float> d(0.0f, 1.0f);
    for (auto& v : hx) v = f32_to_bf16(d(rng));
    CUDA_CHECK(cudaMemcpy(xbuf.get(), hx.data(), hx.size() * 2, cudaMemcpyHostToDevice));
    CUDA_CHECK(cudaDeviceSynchronize());
  }
  const bf16* x = xbuf.get<bf16>();
  bf16* y = ybuf.get<bf16>();

  std::vector<std::unique_ptr<WeightSet>> sets;
  for (const Shape& s : shapes)
    sets.push_back(
        std::make_unique<WeightSet>(ctx, s, std::max(2, static_cast<int>(256e6 / s.bytes()) + 1), rng));
  auto copies = [&](int i) { return static_cast<int>(sets[i]->w.size()); };
  auto per_batch = [&](int i) { return std::max(copies(i), 20); };

  // Rows: the 8 shapes through linear_forward, then q+k+v in one nvfp4_gemv_multi launch and gate+up
  // in one nvfp4_gemv_swiglu launch.
  struct Row {
    std::string name;
    double bytes;
    std::function<void(int)> call;
  };
  std::vector<Row> rows;
  for (int si = 0; si < 8; ++si) {
    const Shape& s = shapes[si];
    rows.push_back({s.name, s.bytes(), [&, si](int i) {
                      const Weight& w = sets[si]->w[i % copies(si)];
                      cuda::linear_forward(ctx, x, w.in, n, w, nullptr, ybuf.get(), DType::BF16, w.out,
                                           cuda::Scratch{});
                    }});
  }
  rows.push_back({"q+k+v (multi)", shapes[0].bytes() + shapes[1].bytes() + shapes[2].bytes(), [&](int i) {
                    const cuda::GemvTarget t[3] = {
                        {&sets[0]->w[i % copies(0)], nullptr, y, 4096},
                        {&sets[1]->w[i % copies(1)], nullptr, y2buf.get<bf16>(), 1024},
                        {&sets[2]->w[i % copies(2)], nullptr, y3buf.get<bf16>(), 1024}};
                    cuda::nvfp4_gemv_multi(ctx, x, 2560, n, t, 3);
                  }});
  rows.push_back({"gate+up (swiglu)", shapes[4].bytes() + shapes[5].bytes(), [&](int i) {
                    cuda::nvfp4_gemv_swiglu(ctx, x, 2560, n, sets[4]->w[i % copies(4)],
                                            sets[5]->w[i % copies(5)], y, 9728);
                  }});
  const int row_batch[10] = {per_batch(0), per_batch(1), per_batch(2), per_batch(3), per_batch(4),
                             per_batch(5), per_batch(6), per_batch(7), per_batch(0), per_batch(4)};

  // Fused decode chain: 36 layers of distinct weights + head, one CUDA graph.
  constexpr int kLayers = 36;
  struct Layer {
    std::unique_ptr<WeightSet> q, k, v, o, gate, up, down;
  };
  std::vector<Layer> layers(kLayers);
  double chain_bytes = 0;
  for (auto& l : layers) {
    l.q = std::make_unique<WeightSet>(ctx, shapes[0], 1, rng);
    l.k = std::make_unique<WeightSet>(ctx, shapes[1], 1, rng);
    l.v = std::make_unique<WeightSet>(ctx, shapes[2], 1, rng);
    l.o = std::make_unique<WeightSet>(ctx, shapes[3], 1, rng);
    l.gate = std::make_unique<WeightSet>(ctx, shapes[4], 1, rng);
    l.up = std::make_unique<WeightSet>(ctx, shapes[5], 1, rng);
    l.down = std::make_unique<WeightSet>(ctx, shapes[6], 1, rng);
    for (int i = 0; i < 7; ++i) chain_bytes += shapes[i].bytes();
  }
  WeightSet head(ctx, shapes[7], 1, rng);
  chain_bytes += shapes[7].bytes();
  cuda::DeviceBuffer act(ctx, size_t(n) * (4096 + 1024 + 1024 + 4096 + 2560 + 9728) * 2 + 4096,
                         "activations");
  bf16* q = act.get<bf16>();
  bf16* k = q + n * 4096;
  bf16* v = k + n * 1024;
  bf16* attn = v + n * 1024;
  bf16* resid = attn + n * 4096;
  bf16* mlp = resid + n * 2560;
  CUDA_CHECK(cudaMemcpy(attn, x, size_t(n) * 4096 * 2, cudaMemcpyDeviceToDevice));
  CUDA_CHECK(cudaMemcpy(resid, x, size_t(n) * 2560 * 2, cudaMemcpyDeviceToDevice));
  CUDA_CHECK(cudaDeviceSynchronize());
  // With `prefetch`, each GEMV pulls the next one's weights into L2 (cuda::L2Prefetch; the last
  // layer's down_proj pulls layer 0's q/k/v): the chain with a lookahead of one GEMV.
  bool prefetch = false;
  auto ranges = [&](std::initializer_list<const Weight*> ws) {
    cuda::L2Prefetch pf;
    if (!prefetch) return pf;
    for (const Weight* w : ws) {
      pf.range[pf.count++] = {w->data, static_cast<uint32_t>(w->out * w->in / 2)};
      pf.range[pf.count++] = {w->scales, static_cast<uint32_t>(w->out * w->in / 16)};
    }
    return pf;
  };
  auto step = [&] {
    for (size_t li = 0; li < layers.size(); ++li) {
      const Layer& l = layers[li];
      const Layer& next = layers[(li + 1) % layers.size()];
      const cuda::GemvTarget t[3] = {
          {&l.q->w[0], nullptr, q, 4096}, {&l.k->w[0], nullptr, k, 1024}, {&l.v->w[0], nullptr, v, 1024}};
      cuda::nvfp4_gemv_multi(ctx, x, 2560, n, t, 3, ranges({&l.o->w[0]}));
      cuda::nvfp4_gemv_residual(ctx, attn, 4096, n, l.o->w[0], nullptr, resid, 2560, resid, 2560,
                                ranges({&l.gate->w[0], &l.up->w[0]}));
      cuda::nvfp4_gemv_swiglu(ctx, x, 2560, n, l.gate->w[0], l.up->w[0], mlp, 9728, ranges({&l.down->w[0]}));
      cuda::nvfp4_gemv_residual(ctx, mlp, 9728, n, l.down->w[0], nullptr, resid, 2560, resid, 2560,
                                ranges({&next.q->w[0], &next.k->w[0], &next.v->w[0]}));
    }
    cuda::linear_forward(ctx, x, 2560, n, head.w[0], nullptr, ybuf.get(), DType::F32, 151936,
                         cuda::Scratch{});
  };
  auto time_chain = [&](double& t_stream) {
    cudaGraph_t graph;
    cudaGraphExec_t exec;
    CUDA_CHECK(cudaStreamBeginCapture(ctx.stream(), cudaStreamCaptureModeThreadLocal));
    step();
    CUDA_CHECK(cudaStreamEndCapture(ctx.stream(), &graph));
    CUDA_CHECK(cudaGraphInstantiate(&exec, graph, 0));
    const double t = time_per_call(ctx, 1, 20, [&](int) { CUDA_CHECK(cudaGraphLaunch(exec, ctx.stream())); });
    t_stream = time_per_call(ctx, 1, 10, [&](int) { step(); });
    CUDA_CHECK(cudaGraphExecDestroy(exec));
    CUDA_CHECK(cudaGraphDestroy(graph));
    return t;
  };
  const double floor = chain_bytes / copy_bw;

  // The FFMA baseline (the GEMV before the tensor-core one), once per shape.
  std::vector<double> t_ffma;
  for (int si = 0; si < 8; ++si)
    t_ffma.push_back(time_per_call(ctx, per_batch(si), 15, [&](int i) {
      const Weight& w = sets[si]->w[i % copies(si)];
      cuda::nvfp4_gemv_ffma(ctx, x, w.in, n, w, nullptr, ybuf.get(), DType::BF16, w.out);
    }));

  // The same launches on one weight copy, which stays in the 50 MB L2 (not the head): the speed a
  // GEMV reaches when its weights were prefetched, i.e. what the kernel itself can do.
  std::vector<double> t_new, t_l2;
  for (size_t r = 0; r < rows.size(); ++r) {
    t_new.push_back(time_per_call(ctx, row_batch[r], 15, rows[r].call));
    t_l2.push_back(time_per_call(ctx, 20, 15, [&](int) { rows[r].call(0); }));
  }
  double t_stream = 0;
  const double t_graph = time_chain(t_stream);
  prefetch = true;
  double t_stream_pf = 0;
  const double t_graph_pf = time_chain(t_stream_pf);
  fmt::print(
      "| shape | MB | FFMA us | FFMA GB/s | tensor-core us | tensor-core GB/s | % of copy | L2-resident us | "
      "L2-resident GB/s |\n");
  fmt::print("|---|---|---|---|---|---|---|---|---|\n");
  for (size_t r = 0; r < rows.size(); ++r)
    fmt::print("| {} | {:.2f} | {} | {} | {:.2f} | {:.0f} | {:.1f}% | {:.2f} | {:.0f} |\n", rows[r].name,
               rows[r].bytes / 1e6, r < 8 ? fmt::format("{:.2f}", t_ffma[r] * 1e6) : "-",
               r < 8 ? fmt::format("{:.0f}", rows[r].bytes / t_ffma[r] / 1e9) : "-", t_new[r] * 1e6,
               rows[r].bytes / t_new[r] / 1e9, 100.0 * rows[r].bytes / t_new[r] / copy_bw, t_l2[r] * 1e6,
               rows[r].bytes / t_l2[r] / 1e9);
  fmt::print(
      "\nfused decode chain (36 x [qkv multi, o+residual, gate/up+swiglu, down+residual] + head, {} "
      "launches, {:.3f} GB of weights):\n",
      36 * 4 + 1, chain_bytes / 1e9);
  fmt::print(
      "  graph replay {:.1f} us ({:.0f} GB/s, {:.1f}% of copy), floor {:.1f} us; plain stream {:.1f} us\n",
      t_graph * 1e6, chain_bytes / t_graph / 1e9, 100.0 * chain_bytes / t_graph / copy_bw, floor * 1e6,
      t_stream * 1e6);
  fmt::print(
      "  with each GEMV prefetching the next one's weights into L2: graph replay {:.1f} us ({:.1f}% of "
      "copy); plain stream {:.1f} us\n",
      t_graph_pf * 1e6, 100.0 * chain_bytes / t_graph_pf / copy_bw, t_stream_pf * 1e6);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  const int64_t n = argc > 1 ? std::atoll(argv[1]) : 1;
  if (n < 1 || n > 8) {
    std::fprintf(stderr, "bench_cuda_gemv: n_tokens must be 1..8\n");
    return 2;
  }
  try {
    if (argc > 2 && std::string(argv[2]) == "profile") return profile(n);
    return run(n);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_cuda_gemv: %s\n", e.what());
    return 1;
  }
}

#else

int main() {
  std::fprintf(stderr,
               "bench_cuda_gemv: built without CUDA (nvcc not found at configure time); nothing to run\n");
  return 1;
}

#endif
