// Fused DNC recurrence on the CPU: the whole sequence forward in one call and
// its hand-derived backward in another (DESIGN.md section 3, one-layer LSTM
// controller). Same equations and order of operations as torchdnc.addressing;
// results differ from the plain PyTorch path only by floating-point rounding.
//
// Memory: per step only O(N) quantities are kept. The memory matrix M and the
// link matrices L are stored at the start of each recompute chunk and rebuilt
// chunk by chunk during the backward pass (see chunk_starts), so the backward
// keeps about sqrt(2 T) copies of them instead of T.

#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <omp.h>

#include <exception>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

namespace {

constexpr double kSimilarityEps = 1e-6;  // torchdnc.addressing.SIMILARITY_EPSILON
constexpr double kAllocationEps = 1e-6;  // torchdnc.addressing.ALLOCATION_EPSILON
constexpr double kSharpnessEps = 1e-6;   // torchdnc.addressing.SHARPNESS_EPSILON
constexpr double kLayerNormEps = 1e-6;   // torchdnc.memory.LAYER_NORM_EPSILON
constexpr int64_t kMaxReads = 64;         // fused.py sends larger R to the plain path

struct Dims {
  int64_t B, T, H, N, W, R, K, I, G, chunk;
  double clip;
  bool oneplus;
  // Ablations (study of running out of memory): free / allocation gates held at
  // this value instead of learned; -1 = learned.
  double fixed_free = -1, fixed_allocation = -1;
  // De-allocation (Csordas & Schmidhuber 2019, "D"): the free gates' retention
  // psi_t also scales the memory rows in the erase-and-write step.
  bool deallocation = false;
  // Masked content addressing ("M"): one mask per read and write head in
  // [mask_min, 1], at the end of the interface.
  bool masking = false;
  double mask_min = 0;
  // Sharpness control ("S"): forward / backward weightings sharpened by one
  // exponent per read head each, at the very end of the interface.
  bool sharpness = false;
  // Temporal links (false: the rsDNC's content-based memory unit, Franke et al.
  // 2018): no link matrix, no precedence, no read modes; read weights are the
  // read content weights. The link and precedence tensors are then [B, K, 0, 0]
  // and [B, K, 0], and the per-step link arrays are empty.
  bool links = true;
  // Layer normalisation of the raw interface vector (rsDNC): xi <- (xi - mean)
  // / sqrt(var + eps) * gain + bias over the whole vector, before it is split.
  bool layer_norm = false;
  int64_t RW() const { return R * W; }
  int64_t NL() const { return links ? N : 0; }  // side of the link matrices
};

// Offsets of the interface parts in xi (DESIGN.md section 3 layout).
struct Layout {
  int64_t read_keys, read_strengths, write_keys, write_strengths, erase, write_vectors,
      free_gates, allocation_gates, write_gates, read_modes, read_masks = -1, write_masks = -1,
      forward_sharpness = -1, backward_sharpness = -1, size;
  explicit Layout(const Dims& d) {
    int64_t o = 0;
    read_keys = o; o += d.R * d.W;
    read_strengths = o; o += d.R;
    write_keys = o; o += d.K * d.W;
    write_strengths = o; o += d.K;
    erase = o; o += d.K * d.W;
    write_vectors = o; o += d.K * d.W;
    free_gates = o; o += d.R;
    allocation_gates = o; o += d.K;
    write_gates = o; o += d.K;
    read_modes = o; if (d.links) o += d.R * (1 + 2 * d.K);
    if (d.masking) {  // torchdnc.memory.split_interface: masks after the read modes
      read_masks = o; o += d.R * d.W;
      write_masks = o; o += d.K * d.W;
    }
    if (d.sharpness) {  // then the sharpness exponents
      forward_sharpness = o; o += d.R;
      backward_sharpness = o; o += d.R;
    }
    size = o;
  }
};

// Batch elements per thread when each thread runs its slice through the whole
// sequence: one fork per call, worth it only when each thread gets about 2^21
// multiply-adds or more. Waking the workers costs about 0.2 ms per call (measured:
// DNC.step, one time step per call, at LSTM 64, N 16, R 4, batch 16 took 0.80 ms a
// step on two threads against 0.59 ms on one), which a whole sequence or a large
// memory repays many times over and a small one-step call does not.
inline int64_t slice_grain(const Dims& d) {
  const int64_t step = d.N * (d.W + d.R + d.K) + d.K * d.NL() * d.NL() * (1 + d.R) +
                       d.G * (d.R * d.W + d.H) + d.I * d.H;
  return std::max<int64_t>(1, (int64_t(1) << 21) / std::max<int64_t>(step * d.T, 1));
}

// Runs body(b0, b1) once per thread, each thread over its own contiguous slice
// of the batch [0, B), on up to `threads` OpenMP threads (at least `grain`
// elements each): one fork and one join per call, no barrier per time step.
// The kernel takes its thread count from the caller rather than from torch's
// intra-op setting, so that a training can keep the small ops around the kernel
// on one thread (no barriers there for a busy neighbour to stall) while the
// recurrence uses every core. (Measured: more, smaller slices taken dynamically
// cost more in per-slice overhead than they win back under contention.) Grad
// mode and inference mode are per thread: the workers take the caller's.
template <typename F>
void for_slices(int64_t B, int64_t grain, int64_t threads, const F& body) {
  const int64_t team = std::max<int64_t>(1, std::min({threads, B / std::max<int64_t>(grain, 1), B}));
  if (team == 1 || omp_in_parallel()) {
    at::NoGradGuard no_grad;
    body(0, B);
    return;
  }
  const bool inference = c10::InferenceMode::is_enabled();
  std::exception_ptr error;
#pragma omp parallel num_threads(team)
  {
    c10::InferenceMode inference_guard(inference);
    at::NoGradGuard no_grad;
    const int64_t count = omp_get_num_threads(), id = omp_get_thread_num();
    const int64_t chunk = (B + count - 1) / count;
    const int64_t b0 = std::min(B, id * chunk), b1 = std::min(B, b0 + chunk);
    if (b0 < b1) {
      try {
        body(b0, b1);
      } catch (...) {
#pragma omp critical
        error = std::current_exception();
      }
    }
  }
  if (error) std::rethrow_exception(error);
}

template <typename T> inline T sigmoid(T x) { return T(1) / (T(1) + std::exp(-x)); }

// torch.nn.functional.softplus with beta 1, threshold 20, and its derivative.
template <typename T> inline T softplus(T x) { return x > T(20) ? x : std::log1p(std::exp(x)); }
template <typename T> inline T softplus_grad(T x) {
  if (x > T(20)) return T(1);
  T z = std::exp(x);
  return z / (z + T(1));
}

template <typename T> inline T clamp(T x, double c) {
  if (c <= 0) return x;
  return std::min(std::max(x, T(-c)), T(c));
}
template <typename T> inline T clamp_pass(T x, double c) {
  if (c <= 0) return T(1);
  return (x >= T(-c) && x <= T(c)) ? T(1) : T(0);
}

// Retention psi_t[n] = prod_r (1 - f_r w^r_{t-1}[n]) of one slot (Methods,
// "Dynamic memory allocation"), the same product order as the usage update.
template <typename T>
inline T retention_of(const T* free_gates, const T* wr_prev, int64_t R, int64_t N, int64_t n) {
  T psi = 1;
  for (int64_t r = 0; r < R; ++r) psi = psi * (T(1) - free_gates[r] * wr_prev[r * N + n]);
  return psi;
}

// Parsed interface of one batch element (activated values).
template <typename T> struct Parsed {
  std::vector<T> v;
  const T* read_keys; const T* read_strengths; const T* write_keys; const T* write_strengths;
  const T* erase; const T* write_vectors; const T* free_gates; const T* allocation_gates;
  const T* write_gates; const T* read_modes;
  const T* read_masks = nullptr; const T* write_masks = nullptr;  // masking only
  const T* forward_sharpness = nullptr; const T* backward_sharpness = nullptr;  // sharpness only
  void parse(const T* xi, const Dims& d, const Layout& lay) {
    v.assign(xi, xi + lay.size);
    T* p = v.data();
    for (int64_t r = 0; r < d.R; ++r) {
      T x = xi[lay.read_strengths + r];
      p[lay.read_strengths + r] = d.oneplus ? T(1) + softplus(x) : softplus(x);
    }
    for (int64_t k = 0; k < d.K; ++k) {
      T x = xi[lay.write_strengths + k];
      p[lay.write_strengths + k] = d.oneplus ? T(1) + softplus(x) : softplus(x);
    }
    for (int64_t i = 0; i < d.K * d.W; ++i) p[lay.erase + i] = sigmoid(xi[lay.erase + i]);
    for (int64_t i = 0; i < d.R; ++i)
      p[lay.free_gates + i] = d.fixed_free >= 0 ? T(d.fixed_free) : sigmoid(xi[lay.free_gates + i]);
    for (int64_t i = 0; i < d.K; ++i) {
      p[lay.allocation_gates + i] = d.fixed_allocation >= 0 ? T(d.fixed_allocation)
                                                            : sigmoid(xi[lay.allocation_gates + i]);
      p[lay.write_gates + i] = sigmoid(xi[lay.write_gates + i]);
    }
    const int64_t M = 1 + 2 * d.K;
    for (int64_t r = 0; r < (d.links ? d.R : 0); ++r) {
      const T* x = xi + lay.read_modes + r * M;
      T* y = p + lay.read_modes + r * M;
      T mx = x[0];
      for (int64_t m = 1; m < M; ++m) mx = std::max(mx, x[m]);
      T s = 0;
      for (int64_t m = 0; m < M; ++m) { y[m] = std::exp(x[m] - mx); s += y[m]; }
      for (int64_t m = 0; m < M; ++m) y[m] = y[m] / s;
    }
    if (d.masking) {
      for (int64_t i = lay.read_masks; i < lay.read_masks + (d.R + d.K) * d.W; ++i) {
        T m = sigmoid(xi[i]);
        if (d.mask_min != 0) m = m * T(1 - d.mask_min) + T(d.mask_min);
        p[i] = m;
      }
      read_masks = p + lay.read_masks;
      write_masks = p + lay.write_masks;
    }
    if (d.sharpness) {  // oneplus, whatever the strengths use
      for (int64_t i = lay.forward_sharpness; i < lay.forward_sharpness + 2 * d.R; ++i)
        p[i] = T(1) + softplus(xi[i]);
      forward_sharpness = p + lay.forward_sharpness;
      backward_sharpness = p + lay.backward_sharpness;
    }
    read_keys = p + lay.read_keys; read_strengths = p + lay.read_strengths;
    write_keys = p + lay.write_keys; write_strengths = p + lay.write_strengths;
    erase = p + lay.erase; write_vectors = p + lay.write_vectors; free_gates = p + lay.free_gates;
    allocation_gates = p + lay.allocation_gates; write_gates = p + lay.write_gates;
    read_modes = p + lay.read_modes;
  }
};

// Dot product. Long vectors use several independent partial sums, so that the
// additions are not one serial dependency chain; short ones one vector sum.
template <typename T> inline __attribute__((always_inline)) T dot(const T* a, const T* b, int64_t n) {
  constexpr int64_t kWidth = 4 * 64 / static_cast<int64_t>(sizeof(T));  // four AVX-512 registers
  int64_t i = 0;
  T s = 0;
  if (n >= 2 * kWidth) {
    T partial[kWidth] = {};
    for (; i + kWidth <= n; i += kWidth) {
      _Pragma("omp simd")
      for (int64_t j = 0; j < kWidth; ++j) partial[j] += a[i + j] * b[i + j];
    }
    for (int64_t j = 0; j < kWidth; ++j) s += partial[j];
  }
  T tail = 0;
  _Pragma("omp simd reduction(+ : tail)")
  for (int64_t j = i; j < n; ++j) tail += a[j] * b[j];
  return s + tail;
}

// Row norms |M[n]| = sqrt(sum_w M[n,w]^2 + eps), shared by every head reading M.
template <typename T>
void row_norms(const T* memory, int64_t N, int64_t W, T* norms) {
  for (int64_t n = 0; n < N; ++n) {
    const T* row = memory + n * W;
    norms[n] = std::sqrt(dot(row, row, W) + T(kSimilarityEps));
  }
}

// Cosine similarity of one key against every memory row, given the row norms.
template <typename T>
__attribute__((noinline)) void similarity(const T* memory, const T* mem_norms, const T* key,
                                          int64_t N, int64_t W, T* dots, T* key_norm, T* sims) {
  T kk = dot(key, key, W);
  *key_norm = std::sqrt(kk + T(kSimilarityEps));
  for (int64_t n = 0; n < N; ++n) {
    dots[n] = dot(key, memory + n * W, W);
    sims[n] = dots[n] / (*key_norm * mem_norms[n] + T(kSimilarityEps));
  }
}

// c = softmax(strength * D(key, memory)) over slots.
template <typename T>
__attribute__((noinline)) void content_forward(const T* memory, const T* norms, const T* key,
                                               T strength, int64_t N, int64_t W, T* out,
                                               std::vector<T>& scratch) {
  scratch.resize(2 * N);
  T* dots = scratch.data(); T* sims = dots + N;
  T key_norm;
  similarity(memory, norms, key, N, W, dots, &key_norm, sims);
  T mx = strength * sims[0];
  for (int64_t n = 0; n < N; ++n) { out[n] = strength * sims[n]; mx = std::max(mx, out[n]); }
  T s = 0;
  for (int64_t n = 0; n < N; ++n) { out[n] = std::exp(out[n] - mx); s += out[n]; }
  for (int64_t n = 0; n < N; ++n) out[n] = out[n] / s;
}

// Backward of content_forward given its output c and upstream dc; adds into
// dmemory [N, W] and dkey [W], returns d strength.
template <typename T>
__attribute__((noinline)) T content_backward(const T* memory, const T* norms, const T* key,
                                             T strength, const T* c, const T* dc, int64_t N,
                                             int64_t W, T* dmemory, T* dkey, std::vector<T>& scratch) {
  scratch.resize(3 * N);
  T* dots = scratch.data(); T* sims = dots + N; T* ds = sims + N;
  T key_norm;
  similarity(memory, norms, key, N, W, dots, &key_norm, sims);
  T inner = 0;
  for (int64_t n = 0; n < N; ++n) inner += dc[n] * c[n];
  T dstrength = 0, dkey_norm = 0;
  for (int64_t n = 0; n < N; ++n) {
    ds[n] = c[n] * (dc[n] - inner);
    dstrength += ds[n] * sims[n];
  }
  for (int64_t n = 0; n < N; ++n) {
    T dsim = strength * ds[n];
    T den = key_norm * norms[n] + T(kSimilarityEps);
    T ddot = dsim / den;
    T dden = -ddot * sims[n];
    dkey_norm += dden * norms[n];
    T dmem_norm = dden * key_norm;
    const T* row = memory + n * W;
    T* drow = dmemory + n * W;
    T scale = dmem_norm / norms[n];
    _Pragma("omp simd")
    for (int64_t w = 0; w < W; ++w) {
      drow[w] += ddot * key[w] + scale * row[w];
      dkey[w] += ddot * row[w];
    }
  }
  T kscale = dkey_norm / key_norm;
  for (int64_t w = 0; w < W; ++w) dkey[w] += kscale * key[w];
  return dstrength;
}

// Masked content addressing (Csordas & Schmidhuber 2019, section 3.1): the head
// compares k * m with every row M[n] * m, the norms taken of the masked vectors
// (torchdnc.addressing.cosine_similarity). Builds the masked rows, their norms
// and the masked key, so that content_forward / content_backward apply as they are.
template <typename T> struct Masked {
  std::vector<T> rows, norms, key, drows, dkey;
  void build(const T* memory, const T* key_in, const T* mask, int64_t N, int64_t W) {
    rows.resize(N * W);
    key.resize(W);
    norms.resize(N);
    for (int64_t n = 0; n < N; ++n) {
      const T* in = memory + n * W;
      T* out = rows.data() + n * W;
      _Pragma("omp simd")
      for (int64_t w = 0; w < W; ++w) out[w] = in[w] * mask[w];
    }
    for (int64_t w = 0; w < W; ++w) key[w] = key_in[w] * mask[w];
    row_norms(rows.data(), N, W, norms.data());
  }
};

// content_forward for one head, masked or not.
template <typename T>
void head_content(const T* memory, const T* norms, const T* key, const T* mask, T strength,
                  int64_t N, int64_t W, T* out, Masked<T>& masked, std::vector<T>& scratch) {
  if (mask == nullptr) return content_forward(memory, norms, key, strength, N, W, out, scratch);
  masked.build(memory, key, mask, N, W);
  content_forward(masked.rows.data(), masked.norms.data(), masked.key.data(), strength, N, W, out,
                  scratch);
}

// content_backward for one head, masked or not: adds into dmemory, dkey and
// (masked) dmask, returns d strength.
template <typename T>
T head_content_backward(const T* memory, const T* norms, const T* key, const T* mask, T strength,
                        const T* c, const T* dc, int64_t N, int64_t W, T* dmemory, T* dkey,
                        T* dmask, Masked<T>& masked, std::vector<T>& scratch) {
  if (mask == nullptr)
    return content_backward(memory, norms, key, strength, c, dc, N, W, dmemory, dkey, scratch);
  masked.build(memory, key, mask, N, W);
  masked.drows.assign(N * W, T(0));
  masked.dkey.assign(W, T(0));
  const T dstrength = content_backward(masked.rows.data(), masked.norms.data(), masked.key.data(),
                                       strength, c, dc, N, W, masked.drows.data(),
                                       masked.dkey.data(), scratch);
  for (int64_t n = 0; n < N; ++n) {  // rows * m: dM += d(rows) m, dm += d(rows) M
    const T* in = memory + n * W;
    const T* dr = masked.drows.data() + n * W;
    T* dm = dmemory + n * W;
    _Pragma("omp simd")
    for (int64_t w = 0; w < W; ++w) {
      dm[w] += dr[w] * mask[w];
      dmask[w] += dr[w] * in[w];
    }
  }
  for (int64_t w = 0; w < W; ++w) {  // key * m
    dkey[w] += masked.dkey[w] * mask[w];
    dmask[w] += masked.dkey[w] * key[w];
  }
  return dstrength;
}

// Sharpened directional weighting (Csordas & Schmidhuber 2019, section 3.3;
// torchdnc.addressing.sharpen): z = ((d + eps) / max(d + eps))^s, normalised.
template <typename T>
void sharpen(const T* weights, int64_t N, T exponent, T* out) {
  T mx = weights[0] + T(kSharpnessEps);
  for (int64_t n = 1; n < N; ++n) mx = std::max(mx, weights[n] + T(kSharpnessEps));
  T sum = 0;
  for (int64_t n = 0; n < N; ++n) {
    out[n] = std::pow((weights[n] + T(kSharpnessEps)) / mx, exponent);
    sum += out[n];
  }
  for (int64_t n = 0; n < N; ++n) out[n] = out[n] / sum;
}

// Backward of sharpen given its output z and upstream dz: adds d weights into
// dweights, returns d exponent. z = x^s / sum x^s (x = d + eps; the max cancels),
// so dx_j = s z_j (dz_j - <dz, z>) / x_j and ds = sum_j z_j log(x_j / max x) (dz_j - <dz, z>).
template <typename T>
T sharpen_backward(const T* weights, int64_t N, T exponent, const T* z, const T* dz, T* dweights) {
  T inner = 0, mx = weights[0] + T(kSharpnessEps);
  for (int64_t n = 0; n < N; ++n) {
    inner += dz[n] * z[n];
    mx = std::max(mx, weights[n] + T(kSharpnessEps));
  }
  T dexponent = 0;
  for (int64_t n = 0; n < N; ++n) {
    const T x = weights[n] + T(kSharpnessEps);
    const T centred = z[n] * (dz[n] - inner);
    dweights[n] += exponent * centred / x;
    dexponent += centred * std::log(x / mx);
  }
  return dexponent;
}

// One head's allocation from usage s (Methods, dynamic memory allocation).
template <typename T>
__attribute__((noinline)) void allocation_forward(const T* usage, int64_t N, T* out, int32_t* order, std::vector<T>& mapped) {
  mapped.resize(N);
  for (int64_t n = 0; n < N; ++n) mapped[n] = T(kAllocationEps) + T(1 - kAllocationEps) * usage[n];
  std::iota(order, order + N, 0);
  std::stable_sort(order, order + N, [&](int32_t a, int32_t b) { return mapped[a] < mapped[b]; });
  T product = 1;
  for (int64_t j = 0; j < N; ++j) {
    T q = mapped[order[j]];
    out[order[j]] = (T(1) - q) * product;
    product = product * q;
  }
}

template <typename T>
__attribute__((noinline)) void allocation_backward(const T* usage, const int32_t* order, const T* dalloc, int64_t N, T* dusage,
                         std::vector<T>& scratch) {
  scratch.resize(3 * N);
  T* q = scratch.data(); T* prefix = q + N; T* da = prefix + N;
  T product = 1;
  for (int64_t j = 0; j < N; ++j) {
    q[j] = T(kAllocationEps) + T(1 - kAllocationEps) * usage[order[j]];
    prefix[j] = product;
    product = product * q[j];
    da[j] = dalloc[order[j]];
  }
  T rest = 0;  // R_j = sum_{m>j} da_m (1 - q_m) prod_{j<i<m} q_i
  for (int64_t j = N - 1; j >= 0; --j) {
    dusage[order[j]] += T(1 - kAllocationEps) * prefix[j] * (rest - da[j]);
    rest = da[j] * (T(1) - q[j]) + q[j] * rest;
  }
}

// Per-step quantities kept for the backward pass, [T, B, ...] layouts.
template <typename T> struct Saved {
  T* usage;          // [T+1, B, N]   u before / after each step
  T* read_weights;   // [T+1, B, R, N]
  T* write_weights;  // [T+1, B, K, N]
  T* precedence;     // [T+1, B, K, N]
  T* simulated;      // [T, B, K, N]  usage each write head allocates on
  T* allocation;     // [T, B, K, N]
  int32_t* order;    // [T, B, K, N]  free lists
  T* write_content;  // [T, B, K, N]
  T* read_content;   // [T, B, R, N]
  T* forward;        // [T, B, R, K, N]
  T* backward;       // [T, B, R, K, N]
};

// The memory chain that does not need the controller: erase-and-write and the
// link update, from the stored write weights, erase / write vectors and
// precedence. Used in the forward pass and to recompute a chunk in backward.
// With `psi` (de-allocation), M_t = M_{t-1} * (psi 1^T) * prod_k (E - w_k e_k^T)
// + sum_k w_k v_k^T, the retention multiplied into the erase product first, as
// torchdnc.addressing.erase_and_write does; psi = nullptr is the paper's DNC.
template <typename T>
__attribute__((noinline)) void write_memory(const T* memory_in, T* memory, const T* ww,
                                           const T* erase, const T* values, const Dims& d,
                                           const T* psi = nullptr) {
  const int64_t N = d.N, W = d.W, K = d.K;
  std::vector<T> keep(W), add(W);
  for (int64_t n = 0; n < N; ++n) {
    const T* in = memory_in + n * W;
    T* row = memory + n * W;
    if (K == 1 && psi == nullptr) {
      const T wn = ww[n];
      _Pragma("omp simd")
      for (int64_t w = 0; w < W; ++w) row[w] = in[w] * (T(1) - wn * erase[w]) + wn * values[w];
      continue;
    }
    if (K == 1) {
      const T wn = ww[n], sn = psi[n];
      _Pragma("omp simd")
      for (int64_t w = 0; w < W; ++w) row[w] = in[w] * (sn * (T(1) - wn * erase[w])) + wn * values[w];
      continue;
    }
    std::fill(keep.begin(), keep.end(), T(1));
    std::fill(add.begin(), add.end(), T(0));
    for (int64_t k = 0; k < K; ++k) {
      const T wkn = ww[k * N + n];
      const T* e = erase + k * W;
      const T* v = values + k * W;
      T* kp = keep.data();
      T* ap = add.data();
      _Pragma("omp simd")
      for (int64_t w = 0; w < W; ++w) {
        kp[w] = kp[w] * (T(1) - wkn * e[w]);
        ap[w] += wkn * v[w];
      }
    }
    if (psi != nullptr) {
      const T sn = psi[n];
      _Pragma("omp simd")
      for (int64_t w = 0; w < W; ++w) row[w] = in[w] * (sn * keep[w]) + add[w];
      continue;
    }
    _Pragma("omp simd")
    for (int64_t w = 0; w < W; ++w) row[w] = in[w] * keep[w] + add[w];
  }
}

// L_t = (1 - w_i - w_j) L_{t-1} + w_i p_j with a zero diagonal; link_in may be link.
template <typename T>
__attribute__((noinline)) void update_link(const T* link_in, T* link, const T* precedence,
                                          const T* ww, int64_t N) {
  for (int64_t i = 0; i < N; ++i) {
    const T* in = link_in + i * N;
    T* row = link + i * N;
    const T wi = ww[i];
    const T a = T(1) - wi;
    _Pragma("omp simd")
    for (int64_t j = 0; j < N; ++j) row[j] = (a - ww[j]) * in[j] + wi * precedence[j];
    row[i] = 0;
  }
}

// Link update of one write head fused with the forward / backward weights of
// all R read heads: one pass over each row of L. `prev` is w^r_{t-1} [R, N];
// fw, bw are [R, K, N] with this head's slice at offset k * N. The previous
// links are read from `link_in` (which may be `link`: in place).
template <typename T, int RR>
void link_and_directions(const T* link_in, T* link, const T* precedence, const T* ww,
                         const T* prev, int64_t N, int64_t R_runtime, int64_t K, int64_t k, T* fw,
                         T* bw) {
  const int64_t R = RR > 0 ? RR : R_runtime;
  T* brow[kMaxReads];
  const T* prow[kMaxReads];
  for (int64_t r = 0; r < R; ++r) {
    brow[r] = bw + (r * K + k) * N;
    prow[r] = prev + r * N;
    std::fill(brow[r], brow[r] + N, T(0));
  }
  for (int64_t i = 0; i < N; ++i) {
    const T* in = link_in + i * N;
    T* row = link + i * N;
    const T wi = ww[i];
    const T a = T(1) - wi;
_Pragma("omp simd")
    for (int64_t j = 0; j < N; ++j) row[j] = (a - ww[j]) * in[j] + wi * precedence[j];
    row[i] = 0;
    T acc[kMaxReads] = {};
    T wri[kMaxReads];
    for (int64_t r = 0; r < R; ++r) wri[r] = prow[r][i];
    if constexpr (RR > 0) {
_Pragma("omp simd")
      for (int64_t j = 0; j < N; ++j) {
        const T v = row[j];
        for (int r = 0; r < RR; ++r) brow[r][j] += v * wri[r];
      }
      for (int r = 0; r < RR; ++r) acc[r] = dot(row, prow[r], N);
    } else {

      for (int64_t r = 0; r < R; ++r) {
        acc[r] = dot(row, prow[r], N);
        T* b = brow[r];
        const T w = wri[r];
_Pragma("omp simd")
        for (int64_t j = 0; j < N; ++j) b[j] += row[j] * w;
      }
    }
    for (int64_t r = 0; r < R; ++r) fw[(r * K + k) * N + i] = acc[r];
  }
}

template <typename T>
void link_and_directions_any(const T* link_in, T* link, const T* precedence, const T* ww,
                             const T* prev, int64_t N, int64_t R, int64_t K, int64_t k, T* fw,
                             T* bw) {
  switch (R) {
    case 1: return link_and_directions<T, 1>(link_in, link, precedence, ww, prev, N, R, K, k, fw, bw);
    case 2: return link_and_directions<T, 2>(link_in, link, precedence, ww, prev, N, R, K, k, fw, bw);
    case 3: return link_and_directions<T, 3>(link_in, link, precedence, ww, prev, N, R, K, k, fw, bw);
    case 4: return link_and_directions<T, 4>(link_in, link, precedence, ww, prev, N, R, K, k, fw, bw);
    default: return link_and_directions<T, 0>(link_in, link, precedence, ww, prev, N, R, K, k, fw, bw);
  }
}

template <typename T> struct Workspace {
  Parsed<T> parsed;
  std::vector<T> a, b, c, d, e, norms_old, norms_new, psi, sharp_fw, sharp_bw;
  Masked<T> masked;
};

// The sharpened forward / backward weightings of every (read head, write head)
// pair into the workspace; *fmix / *bmix point at them.
template <typename T>
void sharpen_all(const T* fw, const T* bw, const Dims& d, const Parsed<T>& P, Workspace<T>& ws,
                 const T** fmix, const T** bmix) {
  const int64_t R = d.R, K = d.K, N = d.N;
  ws.sharp_fw.resize(R * K * N);
  ws.sharp_bw.resize(R * K * N);
  for (int64_t r = 0; r < R; ++r)
    for (int64_t k = 0; k < K; ++k) {
      const int64_t at = (r * K + k) * N;
      sharpen(fw + at, N, P.forward_sharpness[r], ws.sharp_fw.data() + at);
      sharpen(bw + at, N, P.backward_sharpness[r], ws.sharp_bw.data() + at);
    }
  *fmix = ws.sharp_fw.data();
  *bmix = ws.sharp_bw.data();
}

// One memory step of one batch element, in place on (M, u, L, p, wr, ww). The
// step's quantities go to the saved slots `t` (per-step arrays) and `t1` (the
// [T+1] arrays of states after each step): t and t + 1 when the backward will
// need them, fixed slots when nothing is kept (no_grad / inference). The
// previous memory and links are read from M_in, L_in (M, L themselves after
// the first step: in place; the caller's state at the first step, which saves
// a copy of both).
template <typename T>
void memory_forward(const T* xi, const T* M_in, T* M, T* u, const T* L_in, T* L, T* p, T* wr,
                    T* ww, T* reads, const Dims& d,
                    const Layout& lay, Saved<T>& s, int64_t t, int64_t t1, int64_t b,
                    Workspace<T>& ws) {
  const int64_t N = d.N, W = d.W, R = d.R, K = d.K, B = d.B;
  auto& P = ws.parsed;
  P.parse(xi, d, lay);
  // 1. usage from the previous weights (write weights without gradient).
  T* u_new = s.usage + (t1 * B + b) * N;
  ws.psi.resize(N);
  for (int64_t n = 0; n < N; ++n) {
    T unwritten = 1;
    for (int64_t k = 0; k < K; ++k) unwritten = unwritten * (T(1) - ww[k * N + n]);
    T written = T(1) - unwritten;
    const T retention = retention_of(P.free_gates, wr, R, N, n);
    ws.psi[n] = retention;
    u_new[n] = (u[n] + written - u[n] * written) * retention;
  }
  // 2. allocation per write head on a simulated usage.
  const int64_t sbk = (t * B + b) * K * N;
  T* simulated = s.simulated + sbk;
  T* alloc = s.allocation + sbk;
  int32_t* order = s.order + sbk;
  std::copy(u_new, u_new + N, simulated);
  for (int64_t k = 0; k < K; ++k) {
    T* sk = simulated + k * N;
    allocation_forward(sk, N, alloc + k * N, order + k * N, ws.a);
    if (k + 1 < K) {
      T gate = P.allocation_gates[k] * P.write_gates[k];
      T* next = sk + N;
      for (int64_t n = 0; n < N; ++n) next[n] = sk[n] + (T(1) - sk[n]) * gate * alloc[k * N + n];
    }
  }
  // 3. write weights from content on the OLD memory.
  T* wcontent = s.write_content + sbk;
  T* ww_new = s.write_weights + (t1 * B + b) * K * N;
  ws.norms_old.resize(N);
  if (!d.masking) row_norms(M_in, N, W, ws.norms_old.data());  // masked heads take their own
  for (int64_t k = 0; k < K; ++k) {
    head_content(M_in, ws.norms_old.data(), P.write_keys + k * W,
                 d.masking ? P.write_masks + k * W : nullptr, P.write_strengths[k], N, W,
                 wcontent + k * N, ws.masked, ws.b);
    T ga = P.allocation_gates[k], gw = P.write_gates[k];
    for (int64_t n = 0; n < N; ++n)
      ww_new[k * N + n] = gw * (ga * alloc[k * N + n] + (T(1) - ga) * wcontent[k * N + n]);
  }
  // 4. erase then write.
  write_memory(M_in, M, ww_new, P.erase, P.write_vectors, d, d.deallocation ? ws.psi.data() : nullptr);
  // 5 + 7. links from the PREVIOUS precedence (then precedence), with the forward
  // and backward weights from the NEW links and the PREVIOUS read weights; the
  // read content on the NEW memory (6) does not depend on them.
  const int64_t db = (t * B + b) * R * K * N;
  T* p_new = d.links ? s.precedence + (t1 * B + b) * K * N : nullptr;
  T* fw = d.links ? s.forward + db : nullptr;
  T* bw = d.links ? s.backward + db : nullptr;
  for (int64_t k = 0; k < (d.links ? K : 0); ++k) {
    link_and_directions_any(L_in + k * N * N, L + k * N * N, p + k * N, ww_new + k * N, wr, N, R, K, k, fw, bw);
    T sum = 0;
    for (int64_t n = 0; n < N; ++n) sum += ww_new[k * N + n];
    for (int64_t n = 0; n < N; ++n) p_new[k * N + n] = (T(1) - sum) * p[k * N + n] + ww_new[k * N + n];
  }
  // 6. read content on the NEW memory.
  const int64_t rb = (t * B + b) * R * N;
  T* rcontent = s.read_content + rb;
  ws.norms_new.resize(N);
  if (!d.masking) row_norms(M, N, W, ws.norms_new.data());  // masked heads take their own
  for (int64_t r = 0; r < R; ++r)
    head_content(M, ws.norms_new.data(), P.read_keys + r * W,
                 d.masking ? P.read_masks + r * W : nullptr, P.read_strengths[r], N, W,
                 rcontent + r * N, ws.masked, ws.b);
  // 8. read weights (from the sharpened forward / backward weightings with
  // sharpness; the saved ones stay unsharpened) and read vectors.
  const T* fmix = fw;
  const T* bmix = bw;
  if (d.sharpness && d.links) sharpen_all(fw, bw, d, P, ws, &fmix, &bmix);
  T* wr_new = s.read_weights + (t1 * B + b) * R * N;
  const int64_t modes = 1 + 2 * K;
  for (int64_t r = 0; r < R; ++r) {
    if (!d.links) {  // the content-based unit reads by content only
      std::copy(rcontent + r * N, rcontent + (r + 1) * N, wr_new + r * N);
    } else {
      const T* pi = P.read_modes + r * modes;
      for (int64_t n = 0; n < N; ++n) {
        T back = 0, fore = 0;
        for (int64_t k = 0; k < K; ++k) back += pi[k] * bmix[(r * K + k) * N + n];
        for (int64_t k = 0; k < K; ++k) fore += pi[K + 1 + k] * fmix[(r * K + k) * N + n];
        wr_new[r * N + n] = back + pi[K] * rcontent[r * N + n] + fore;
      }
    }
    T* out = reads + r * W;
    std::fill(out, out + W, T(0));
    for (int64_t n = 0; n < N; ++n) {
      const T wv = wr_new[r * N + n];
      const T* row = M + n * W;
_Pragma("omp simd")
      for (int64_t w = 0; w < W; ++w) out[w] += wv * row[w];
    }
  }
  std::copy(u_new, u_new + N, u);
  std::copy(ww_new, ww_new + K * N, ww);
  if (d.links) std::copy(p_new, p_new + K * N, p);
  std::copy(wr_new, wr_new + R * N, wr);
}

// Start steps of the recompute chunks. chunk > 0: equal chunks of that many
// steps. chunk <= 0: a triangular schedule, chunk lengths L0, L0 - 1, ..., 1
// with L0 (L0 + 1) / 2 >= T. Freeing each boundary once its chunk is done, the
// backward then holds about L0 + 2 ~ sqrt(2 T) copies of (M, L) at any time,
// against ~2 sqrt(T) for equal chunks, with the same amount of recomputation.
std::vector<int64_t> chunk_starts(int64_t T, int64_t chunk) {
  std::vector<int64_t> starts;
  if (chunk > 0) {
    for (int64_t t = 0; t < T; t += chunk) starts.push_back(t);
    return starts;
  }
  int64_t first = 1;
  while (first * (first + 1) / 2 < T) ++first;
  for (int64_t t = 0, length = first; t < T; t += length, length = std::max<int64_t>(length - 1, 1))
    starts.push_back(t);
  return starts;
}

}  // namespace

// Memory and link matrices at the start of each recompute chunk; the backward
// pass releases each one as soon as its chunk is done.
struct Boundaries {
  std::vector<torch::Tensor> memory, link;
  std::vector<int64_t> starts;
};

// The invariants the kernel relies on; fused.py checks the user-facing ones
// with clear messages before it gets here.
void check_forward_inputs(const torch::Tensor& projected, const torch::Tensor& w_cat,
                          const torch::Tensor& w_xi, const torch::Tensor& b_xi,
                          const std::vector<torch::Tensor>& state, const torch::Tensor& keep,
                          const torch::Tensor& ln_w, const torch::Tensor& ln_b,
                          const torch::Tensor& xi_context) {
  TORCH_CHECK(projected.dim() == 3, "fused_dnc: projected must be [B, T, 4H]");
  TORCH_CHECK(projected.device().is_cpu(), "fused_dnc: CPU tensors only");
  TORCH_CHECK(projected.scalar_type() == torch::kFloat || projected.scalar_type() == torch::kDouble,
              "fused_dnc: float32 or float64 only");
  const auto dtype = projected.scalar_type();
  for (const auto& t : {w_cat, w_xi, b_xi})
    TORCH_CHECK(t.scalar_type() == dtype && t.device().is_cpu(), "fused_dnc: weights must match projected");
  for (const auto& t : state)
    TORCH_CHECK(t.scalar_type() == dtype && t.device().is_cpu(),
                "fused_dnc: state tensors must be CPU tensors of projected's dtype");
  const int64_t B = projected.size(0), T = projected.size(1), G = projected.size(2);
  const int64_t H = state[0].size(1);
  TORCH_CHECK(G == 4 * H, "fused_dnc: projected has ", G, " gate inputs, expected 4 H = ", 4 * H);
  TORCH_CHECK(state[2].dim() == 3 && state[2].size(0) == B, "fused_dnc: r0 must be [B, R, W]");
  const int64_t R = state[2].size(1), W = state[2].size(2);
  TORCH_CHECK(R >= 1 && R <= kMaxReads, "fused_dnc: R = ", R, " outside 1..", kMaxReads);
  TORCH_CHECK(state[3].dim() == 3 && state[3].size(0) == B && state[3].size(2) == W,
              "fused_dnc: memory must be [B, N, W]");
  const int64_t N = state[3].size(1);
  TORCH_CHECK(state[5].dim() == 4 && state[5].size(0) == B && state[5].size(2) == state[5].size(3) &&
                  (state[5].size(2) == N || state[5].size(2) == 0),
              "fused_dnc: link must be [B, K, N, N] (or [B, K, 0, 0] without temporal links)");
  const int64_t K = state[5].size(1), NL = state[5].size(2);
  TORCH_CHECK(w_cat.size(0) == G && w_cat.size(1) == R * W + H, "fused_dnc: w_cat must be [4H, R W + H]");
  TORCH_CHECK(w_xi.dim() == 2 && w_xi.size(1) == H && b_xi.numel() == w_xi.size(0),
              "fused_dnc: w_xi must be [I, H], b_xi [I]");
  const std::vector<std::vector<int64_t>> shapes{{B, H}, {B, H}, {B, R, W}, {B, N, W}, {B, N},
                                                 {B, K, NL, NL}, {B, K, NL}, {B, R, N}, {B, K, N}};
  for (size_t i = 0; i < shapes.size(); ++i)
    TORCH_CHECK(state[i].sizes().vec() == shapes[i], "fused_dnc: state tensor ", i, " has shape ",
                state[i].sizes(), ", expected ", c10::IntArrayRef(shapes[i]));
  TORCH_CHECK(keep.numel() == 0 || (keep.scalar_type() == torch::kBool && keep.dim() == 2 &&
                                    keep.size(0) == B && keep.size(1) == T),
              "fused_dnc: keep must be an empty tensor or a bool [B, T] mask");
  TORCH_CHECK(ln_w.numel() == ln_b.numel() && (ln_w.numel() == 0 || ln_w.numel() == w_xi.size(0)),
              "fused_dnc: layer norm gain and bias must both be empty or both [I]");
  for (const auto& t : {ln_w, ln_b})
    TORCH_CHECK(t.numel() == 0 || (t.scalar_type() == dtype && t.device().is_cpu()),
                "fused_dnc: layer norm parameters must match projected");
  TORCH_CHECK(xi_context.numel() == 0 ||
                  (xi_context.dim() == 3 && xi_context.size(0) == B && xi_context.size(1) == T &&
                   xi_context.size(2) == w_xi.size(0) && xi_context.scalar_type() == dtype &&
                   xi_context.device().is_cpu()),
              "fused_dnc: xi_context must be empty or [B, T, I] of projected's dtype");
}

namespace {

// Layer normalisation of one raw interface vector in place (nn.LayerNorm's
// order: mean, biased variance, (x - mean) * rstd * gain + bias); keeps the
// normalised vector xhat and rstd for the backward pass.
template <typename T>
void layer_norm_forward(T* xi, int64_t I, const T* gain, const T* bias, T* xhat, T* rstd) {
  T mean = 0;
  for (int64_t i = 0; i < I; ++i) mean += xi[i];
  mean = mean / T(I);
  T var = 0;
  for (int64_t i = 0; i < I; ++i) { const T c = xi[i] - mean; var += c * c; }
  var = var / T(I);
  const T r = T(1) / std::sqrt(var + T(kLayerNormEps));
  *rstd = r;
  for (int64_t i = 0; i < I; ++i) {
    xhat[i] = (xi[i] - mean) * r;
    xi[i] = xhat[i] * gain[i] + bias[i];
  }
}

// Its backward: dx = rstd (dxhat - mean(dxhat) - xhat mean(dxhat xhat)), with
// dxhat = dy * gain; dy is overwritten with dx.
template <typename T>
void layer_norm_backward(T* dy, int64_t I, const T* gain, const T* xhat, T rstd) {
  T mean_d = 0, mean_dx = 0;
  for (int64_t i = 0; i < I; ++i) {
    const T g = dy[i] * gain[i];
    mean_d += g;
    mean_dx += g * xhat[i];
  }
  mean_d = mean_d / T(I);
  mean_dx = mean_dx / T(I);
  for (int64_t i = 0; i < I; ++i) dy[i] = rstd * (dy[i] * gain[i] - mean_d - xhat[i] * mean_dx);
}

}  // namespace

// Forward over the whole sequence. Returns the ten outputs (hidden [B, T, H],
// reads [B, T, R, W], the final h, c, M, u, L, p, w^r, w^w) and, with `store`,
// every tensor the backward needs (opaque to Python) and the recompute
// boundaries. Without `store` (no_grad / inference) nothing per step is kept
// beyond the outputs: the per-step arrays shrink to one or two slots reused
// every step, so memory does not grow with T.
std::tuple<std::vector<torch::Tensor>, std::shared_ptr<Boundaries>> fused_forward(
    torch::Tensor projected,  // [B, T, 4H]: W_ih[:, :input] x_t + b_ih + b_hh
    torch::Tensor w_cat,      // [4H, R W + H]: [W_ih[:, input:], W_hh]
    torch::Tensor w_xi, torch::Tensor b_xi,  // [I, H], [I]
    torch::Tensor h0, torch::Tensor c0, torch::Tensor r0,  // [B,H], [B,H], [B,R,W]
    torch::Tensor M0, torch::Tensor u0, torch::Tensor L0, torch::Tensor p0, torch::Tensor wr0,
    torch::Tensor ww0, torch::Tensor keep,  // keep: [B, T] bool or empty
    torch::Tensor ln_w, torch::Tensor ln_b,  // layer norm gain, bias [I], or both empty
    torch::Tensor xi_context,  // [B, T, I] added to each step's raw xi (bi-rsDNC), or empty
    double clip, bool oneplus, int64_t chunk, bool store, int64_t threads, double fixed_free,
    double fixed_allocation, bool deallocation, bool masking, double mask_min, bool sharpness) {
  check_forward_inputs(projected, w_cat, w_xi, b_xi, {h0, c0, r0, M0, u0, L0, p0, wr0, ww0}, keep,
                       ln_w, ln_b, xi_context);
  const int64_t B = projected.size(0), T = projected.size(1), G = projected.size(2);
  const int64_t H = h0.size(1), R = r0.size(1), W = r0.size(2), N = M0.size(1), K = L0.size(1);
  Dims d{B, T, H, N, W, R, K, w_xi.size(0), G, chunk, clip, oneplus, fixed_free, fixed_allocation,
         deallocation, masking, mask_min, sharpness, L0.size(2) > 0, ln_w.numel() > 0};
  const int64_t NL = d.NL();
  Layout lay(d);
  TORCH_CHECK(lay.size == d.I, "fused_dnc: interface size ", d.I, " does not match ", lay.size);
  auto opts = projected.options();
  auto boundaries = std::make_shared<Boundaries>();
  if (store) boundaries->starts = chunk_starts(T, chunk);
  auto iopts = opts.dtype(torch::kInt32);
  const bool masked = keep.numel() > 0;
  auto keep_c = masked ? keep.contiguous() : keep;
  // Slots of the per-step arrays: [T] arrays use slot at(t), [T + 1] arrays
  // (the state before / after each step) slot at1(t).
  const int64_t steps = store ? T : 1, states = store ? T + 1 : 2;
  auto at = [&](int64_t t) { return store ? t : int64_t(0); };
  auto at1 = [&](int64_t t) { return store ? t : t % 2; };

  auto hidden = torch::empty({T + 1, B, H}, opts);  // h_t clipped; [0] = h0 (an output)
  auto reads = torch::empty({T + 1, B, R, W}, opts); // [0] = r0 (an output)
  auto cell = torch::empty({states, B, H}, opts);
  auto cell_raw = torch::empty({steps, B, H}, opts);    // c' before clipping
  auto tanh_cell = torch::empty({steps, B, H}, opts);   // tanh(c')
  auto gates = torch::empty({steps, B, G}, opts);        // i, f, g, o activations
  auto xis = torch::empty({steps, B, d.I}, opts);        // raw interface vectors
  auto inputs = torch::empty({store ? T : 2, B, R * W + H}, opts);  // controller inputs [r_{t-1}; h_{t-1}]
  auto usage = torch::empty({states, B, N}, opts);
  auto read_w = torch::empty({states, B, R, N}, opts);
  auto write_w = torch::empty({states, B, K, N}, opts);
  auto prec = torch::empty({states, B, K, NL}, opts);
  auto simulated = torch::empty({steps, B, K, N}, opts);
  auto alloc = torch::empty({steps, B, K, N}, opts);
  auto order = torch::empty({steps, B, K, N}, iopts);
  auto wcontent = torch::empty({steps, B, K, N}, opts);
  auto rcontent = torch::empty({steps, B, R, N}, opts);
  auto fwd = torch::empty({steps, B, R, K, NL}, opts);
  auto bwd = torch::empty({steps, B, R, K, NL}, opts);
  // Layer norm: the normalised interface vectors and their 1 / std, per step.
  auto xhat = torch::empty({d.layer_norm ? steps : 0, B, d.I}, opts);
  auto rstd = torch::empty({d.layer_norm ? steps : 0, B}, opts);
  auto ln_w_c = ln_w.contiguous(), ln_b_c = ln_b.contiguous();
  const bool contextual = xi_context.numel() > 0;
  auto context_t = contextual ? xi_context.transpose(0, 1) : xi_context;  // [T, B, I]

  // The first step reads M0, L0 and writes M, L (no copy of the state first).
  auto M0c = M0.contiguous(), L0c = L0.contiguous();
  auto M = torch::empty(M0c.sizes(), opts);
  auto L = torch::empty(L0c.sizes(), opts);
  auto u_cur = u0.contiguous().clone();
  auto p_cur = p0.contiguous().clone();
  auto wr_cur = wr0.contiguous().clone();
  auto ww_cur = ww0.contiguous().clone();
  hidden[0].copy_(h0); cell[0].copy_(c0); reads[0].copy_(r0.reshape({B, R, W}));
  usage[0].copy_(u0); read_w[0].copy_(wr0); write_w[0].copy_(ww0); prec[0].copy_(p0);
  for (size_t m = 0; m < boundaries->starts.size(); ++m) {  // filled row by row below
    boundaries->memory.push_back(torch::empty({B, N, W}, opts));
    boundaries->link.push_back(torch::empty({B, K, NL, NL}, opts));
  }
  auto wct = w_cat.t();
  auto wxit = w_xi.t();
  auto z = torch::empty({B, G}, opts);

  AT_DISPATCH_FLOATING_TYPES(projected.scalar_type(), "fused_dnc_forward", [&] {
    using T_ = scalar_t;
    Saved<T_> s{usage.data_ptr<T_>(), read_w.data_ptr<T_>(), write_w.data_ptr<T_>(),
                prec.data_ptr<T_>(), simulated.data_ptr<T_>(), alloc.data_ptr<T_>(),
                order.data_ptr<int32_t>(), wcontent.data_ptr<T_>(), rcontent.data_ptr<T_>(),
                fwd.data_ptr<T_>(), bwd.data_ptr<T_>()};
    const bool* keep_p = masked ? keep_c.data_ptr<bool>() : nullptr;
    const int64_t RW = R * W;
    const auto& starts = boundaries->starts;
    std::vector<T_*> boundary_M, boundary_L;
    for (size_t m = 0; m < starts.size(); ++m) {
      boundary_M.push_back(boundaries->memory[m].data_ptr<T_>());
      boundary_L.push_back(boundaries->link[m].data_ptr<T_>());
    }
    T_* Mp = M.data_ptr<T_>(); T_* Lp = L.data_ptr<T_>(); T_* up = u_cur.data_ptr<T_>();
    const T_* M0p = M0c.data_ptr<T_>(); const T_* L0p = L0c.data_ptr<T_>();
    T_* pp = p_cur.data_ptr<T_>(); T_* wrp = wr_cur.data_ptr<T_>(); T_* wwp = ww_cur.data_ptr<T_>();
    // Base pointers of the per-step arrays (all freshly allocated, contiguous):
    // slot arithmetic instead of a tensor view per array and step, which costs
    // more than the arithmetic of a small step (and all of a one-step call).
    T_* hidden_p = hidden.data_ptr<T_>(); T_* cell_p = cell.data_ptr<T_>();
    T_* cell_raw_p = cell_raw.data_ptr<T_>(); T_* tanh_p = tanh_cell.data_ptr<T_>();
    T_* gates_p = gates.data_ptr<T_>(); T_* xis_p = xis.data_ptr<T_>();
    T_* inputs_p = inputs.data_ptr<T_>(); T_* reads_p = reads.data_ptr<T_>();
    T_* xhat_p = d.layer_norm ? xhat.data_ptr<T_>() : nullptr;
    T_* rstd_p = d.layer_norm ? rstd.data_ptr<T_>() : nullptr;
    const int64_t I = d.I;
    // Each thread carries its own slice of the batch through the whole sequence
    // (controller products on the slice included): no barrier per time step, so
    // a busy neighbour on the cores slows the pass down in proportion only.
    for_slices(B, slice_grain(d), threads, [&](int64_t b0, int64_t b1) {
      const int64_t n = b1 - b0;
      Workspace<T_> ws;
      // The slice's views, made once; per step only the time slot is selected.
      auto zs = z.narrow(0, b0, n);
      auto z_candidate = zs.narrow(1, 2 * H, H);
      auto proj_s = projected.narrow(0, b0, n);    // [n, T, G]
      auto inputs_s = inputs.narrow(1, b0, n);     // [slots, n, R W + H]
      auto gates_s = gates.narrow(1, b0, n);
      auto cell_raw_s = cell_raw.narrow(1, b0, n);
      auto tanh_s = tanh_cell.narrow(1, b0, n);
      auto xis_s = xis.narrow(1, b0, n);
      auto hidden_s = hidden.narrow(1, b0, n);
      auto context_s = contextual ? context_t.narrow(1, b0, n) : context_t;
      {  // Controller input of step 0: [r_0; h_0].
        T_* inp = inputs_p;
        const T_* r = reads_p;
        const T_* h = hidden_p;
        for (int64_t b = b0; b < b1; ++b) {
          std::copy(r + b * RW, r + (b + 1) * RW, inp + b * (RW + H));
          std::copy(h + b * H, h + (b + 1) * H, inp + b * (RW + H) + RW);
        }
      }
      size_t next_boundary = 0;
      for (int64_t t = 0; t < T; ++t) {
        const int64_t ts = at(t), ts0 = at1(t), ts1 = at1(t + 1);
        const T_* Min = t == 0 ? M0p : Mp;  // the state before step t
        const T_* Lin = t == 0 ? L0p : Lp;
        if (next_boundary < starts.size() && starts[next_boundary] == t) {
          std::copy(Min + b0 * N * W, Min + b1 * N * W, boundary_M[next_boundary] + b0 * N * W);
          std::copy(Lin + b0 * K * NL * NL, Lin + b1 * K * NL * NL,
                    boundary_L[next_boundary] + b0 * K * NL * NL);
          ++next_boundary;
        }
        at::addmm_out(zs, proj_s.select(1, t), inputs_s.select(0, ts0), wct);
        // Controller: LSTM gates i, f, g, o (vectorised by ATen), cell, hidden, clipping.
        auto gates_t = gates_s.select(0, ts);
        at::sigmoid_out(gates_t, zs);
        auto candidate = gates_t.narrow(1, 2 * H, H);
        at::tanh_out(candidate, z_candidate);
        T_* gp = gates_p + ts * B * G;
        T_* cprev = cell_p + ts0 * B * H;
        T_* hprev = hidden_p + t * B * H;
        T_* cnew = cell_p + ts1 * B * H;
        T_* hnew = hidden_p + (t + 1) * B * H;
        T_* craw = cell_raw_p + ts * B * H;
        for (int64_t b = b0; b < b1; ++b) {
          const T_* gb = gp + b * G;
          const T_* cp = cprev + b * H;
          T_* cr = craw + b * H;
          _Pragma("omp simd")
          for (int64_t j = 0; j < H; ++j) cr[j] = gb[H + j] * cp[j] + gb[j] * gb[2 * H + j];
        }
        auto tanh_t = tanh_s.select(0, ts);
        at::tanh_out(tanh_t, cell_raw_s.select(0, ts));
        const T_* tc = tanh_p + ts * B * H;
        T_* next_inp = t + 1 < T ? inputs_p + ts1 * B * (RW + H) : nullptr;
        for (int64_t b = b0; b < b1; ++b) {
          const bool on = keep_p == nullptr || keep_p[b * T + t];
          const T_* gb = gp + b * G;
          T_* cn = cnew + b * H;
          T_* hn = hnew + b * H;
          if (on) {
            const T_* cr = craw + b * H;
            const T_* tb = tc + b * H;
            _Pragma("omp simd")
            for (int64_t j = 0; j < H; ++j) {
              cn[j] = clamp(cr[j], clip);
              hn[j] = clamp(gb[3 * H + j] * tb[j], clip);
            }
          } else {
            std::copy(cprev + b * H, cprev + (b + 1) * H, cn);
            std::copy(hprev + b * H, hprev + (b + 1) * H, hn);
          }
          if (next_inp != nullptr) std::copy(hn, hn + H, next_inp + b * (RW + H) + RW);
        }
        auto xi_out = xis_s.select(0, ts);
        at::addmm_out(xi_out, b_xi, hidden_s.select(0, t + 1), wxit);
        if (contextual) xi_out.add_(context_s.select(0, t));
        T_* xip = xis_p + ts * B * I;
        if (d.layer_norm) {  // xis keeps the normalised vectors: what the memory reads
          T_* xh = xhat_p + ts * B * I;
          T_* rs = rstd_p + ts * B;
          for (int64_t b = b0; b < b1; ++b)
            layer_norm_forward(xip + b * I, I, ln_w_c.data_ptr<T_>(), ln_b_c.data_ptr<T_>(),
                               xh + b * I, rs + b);
        }
        T_* rnext = reads_p + (t + 1) * B * RW;
        T_* rprev = reads_p + t * B * RW;
        for (int64_t b = b0; b < b1; ++b) {
          const bool on = keep_p == nullptr || keep_p[b * T + t];
          if (on) {
            memory_forward(xip + b * d.I, Min + b * N * W, Mp + b * N * W, up + b * N,
                           Lin + b * K * NL * NL, Lp + b * K * NL * NL, pp + b * K * NL,
                           wrp + b * R * N, wwp + b * K * N, rnext + b * R * W, d, lay, s, ts,
                           ts1, b, ws);
          } else {  // padding: the state is carried through unchanged
            if (t == 0) {
              std::copy(Min + b * N * W, Min + (b + 1) * N * W, Mp + b * N * W);
              std::copy(Lin + b * K * NL * NL, Lin + (b + 1) * K * NL * NL, Lp + b * K * NL * NL);
            }
            std::copy(up + b * N, up + (b + 1) * N, s.usage + (ts1 * B + b) * N);
            std::copy(wrp + b * R * N, wrp + (b + 1) * R * N, s.read_weights + (ts1 * B + b) * R * N);
            std::copy(wwp + b * K * N, wwp + (b + 1) * K * N, s.write_weights + (ts1 * B + b) * K * N);
            std::copy(pp + b * K * NL, pp + (b + 1) * K * NL, s.precedence + (ts1 * B + b) * K * NL);
            std::copy(rprev + b * R * W, rprev + (b + 1) * R * W, rnext + b * R * W);
          }
          if (next_inp != nullptr)
            std::copy(rnext + b * RW, rnext + (b + 1) * RW, next_inp + b * (RW + H));
        }
      }
    });
  });
  const int64_t last = at1(T);
  std::vector<torch::Tensor> out{
      hidden.narrow(0, 1, T).transpose(0, 1), reads.narrow(0, 1, T).transpose(0, 1),
      hidden[T], cell[last], M, usage[last], L, prec[last], read_w[last], write_w[last]};
  if (store) {  // saved for backward
    for (const auto& t : {hidden, cell, cell_raw, gates, xis, reads, inputs, usage, read_w, write_w,
                          prec, simulated, alloc, order, wcontent, rcontent, fwd, bwd, keep_c,
                          tanh_cell, xhat, rstd})
      out.push_back(t);
  }
  return {out, boundaries};
}

namespace {

// Recompute M_t and L_t for the steps [t0, t1) of a chunk. mem[i] / link[i]
// hold the states BEFORE step t0 + i for i = 0 .. t1 - t0; slot 0 is the
// chunk's boundary, the others are filled here.
template <typename T>
void recompute_chunk(int64_t t0, int64_t t1, int64_t b0, int64_t b1, const T* xis,
                     const T* write_w, const T* read_w, const T* prec, const bool* keep,
                     const std::vector<T*>& mem, const std::vector<T*>& link, const Dims& d,
                     const Layout& lay) {
  const int64_t B = d.B, N = d.N, W = d.W, K = d.K, I = d.I;
  const int64_t msz = N * W, lsz = K * d.NL() * d.NL();
  {
    std::vector<T> erase(K * W), free_gates(d.R), psi(d.deallocation ? N : 0);
    for (int64_t b = b0; b < b1; ++b) {
      for (int64_t t = t0; t < t1; ++t) {
        const int64_t i = t - t0;
        const T* Mprev = mem[i] + b * msz;
        const T* Lprev = link[i] + b * lsz;
        T* Mnext = mem[i + 1] + b * msz;
        T* Lnext = link[i + 1] + b * lsz;
        if (keep != nullptr && !keep[b * d.T + t]) {
          std::copy(Mprev, Mprev + msz, Mnext);
          std::copy(Lprev, Lprev + lsz, Lnext);
          continue;
        }
        const T* xi = xis + (t * B + b) * I;
        for (int64_t j = 0; j < K * W; ++j) erase[j] = sigmoid(xi[lay.erase + j]);
        const T* ww = write_w + ((t + 1) * B + b) * K * N;
        if (d.deallocation) {
          for (int64_t r = 0; r < d.R; ++r)
            free_gates[r] = d.fixed_free >= 0 ? T(d.fixed_free) : sigmoid(xi[lay.free_gates + r]);
          const T* wr_prev = read_w + (t * B + b) * d.R * N;
          for (int64_t n = 0; n < N; ++n) psi[n] = retention_of(free_gates.data(), wr_prev, d.R, N, n);
        }
        write_memory(Mprev, Mnext, ww, erase.data(), xi + lay.write_vectors, d,
                     d.deallocation ? psi.data() : nullptr);
        const T* p = prec + (t * B + b) * K * d.NL();
        for (int64_t k = 0; k < (d.links ? K : 0); ++k)
          update_link(Lprev + k * N * N, Lnext + k * N * N, p + k * N, ww + k * N, N);
      }
    }
  }
}

// Backward of one write head's link update and of the directional weights of
// all R read heads, one pass per row. On entry dL holds dL/dL_t (this head);
// on exit dL/dL_{t-1}. Adds into dwr_prev [R, N], dww [N], dp_prev [N].
template <typename T, int RR>
void link_backward(T* dL, const T* Lt, const T* Lprev, const T* ww, const T* p, const T* wr_prev,
                   const T* dfw, const T* dbw, T* dwr_prev, T* dww, T* dp_prev, T* grow,
                   int64_t N, int64_t R_runtime, int64_t K, int64_t k) {
  const int64_t R = RR > 0 ? RR : R_runtime;
  const T* wrr[kMaxReads];
  const T* dbr[kMaxReads];
  T* dwrr[kMaxReads];
  for (int64_t r = 0; r < R; ++r) {
    wrr[r] = wr_prev + r * N;
    dbr[r] = dbw + (r * K + k) * N;
    dwrr[r] = dwr_prev + r * N;
  }
  for (int64_t i = 0; i < N; ++i) {
    T* dLrow = dL + i * N;
    const T* Lrow = Lt + i * N;
    const T* Lprow = Lprev + i * N;
    T dfi[kMaxReads], wri[kMaxReads], acc[kMaxReads] = {};
    for (int64_t r = 0; r < R; ++r) {
      dfi[r] = dfw[(r * K + k) * N + i];
      wri[r] = wrr[r][i];
    }
    // G = dL_t + sum_r (df_r[i] w^r_{t-1}[j] + w^r_{t-1}[i] db_r[j]); (L^T df) and (L db).
    if constexpr (RR > 0) {
_Pragma("omp simd")
      for (int64_t j = 0; j < N; ++j) {
        T g = dLrow[j];
        const T l = Lrow[j];
        for (int r = 0; r < RR; ++r) {
          g += dfi[r] * wrr[r][j] + wri[r] * dbr[r][j];
          dwrr[r][j] += l * dfi[r];
        }
        grow[j] = g;
      }
      for (int r = 0; r < RR; ++r) acc[r] = dot(Lrow, dbr[r], N);
    } else {

      std::copy(dLrow, dLrow + N, grow);
      for (int64_t r = 0; r < R; ++r) {
        const T df = dfi[r], wi_r = wri[r];
        const T* w = wrr[r];
        const T* d = dbr[r];
        T* dw = dwrr[r];
_Pragma("omp simd")
        for (int64_t j = 0; j < N; ++j) {
          grow[j] += df * w[j] + wi_r * d[j];
          dw[j] += Lrow[j] * df;
        }
        acc[r] = dot(Lrow, d, N);
      }
    }
    for (int64_t r = 0; r < R; ++r) dwrr[r][i] += acc[r];
    grow[i] = 0;  // L_t[i, i] is fixed at 0
    const T wi = ww[i];
    const T a = T(1) - wi;
    T dwi = 0;
_Pragma("omp simd reduction(+ : dwi)")
    for (int64_t j = 0; j < N; ++j) {
      const T gij = grow[j];
      const T tl = gij * Lprow[j];
      dwi += gij * p[j] - tl;
      dww[j] -= tl;
      dp_prev[j] += gij * wi;
      dLrow[j] = (a - ww[j]) * gij;
    }
    dww[i] += dwi;
  }
}

template <typename T>
void link_backward_any(T* dL, const T* Lt, const T* Lprev, const T* ww, const T* p,
                       const T* wr_prev, const T* dfw, const T* dbw, T* dwr_prev, T* dww,
                       T* dp_prev, T* grow, int64_t N, int64_t R, int64_t K, int64_t k) {
  switch (R) {
#define TORCHDNC_CASE(n) \
    case n: return link_backward<T, n>(dL, Lt, Lprev, ww, p, wr_prev, dfw, dbw, dwr_prev, dww, dp_prev, grow, N, R, K, k);
    TORCHDNC_CASE(1) TORCHDNC_CASE(2) TORCHDNC_CASE(3) TORCHDNC_CASE(4)
#undef TORCHDNC_CASE
    default:
      return link_backward<T, 0>(dL, Lt, Lprev, ww, p, wr_prev, dfw, dbw, dwr_prev, dww, dp_prev,
                                 grow, N, R, K, k);
  }
}

// Backward of one memory step of one batch element. Adjoint buffers hold the
// gradients w.r.t. the state after step t on entry and before it on exit;
// dreads is the gradient w.r.t. r_t; dxi receives the raw-interface gradient.
template <typename T>
void memory_backward(const T* xi, const T* Mprev, const T* Mt, const T* Lprev, const T* Lt,
                     const Saved<T>& s, int64_t t, int64_t b, const Dims& d, const Layout& lay,
                     const T* dreads, T* dM, T* du, T* dL, T* dp, T* dwr, T* dww, T* dxi,
                     Workspace<T>& ws) {
  const int64_t N = d.N, W = d.W, R = d.R, K = d.K, B = d.B;
  auto& P = ws.parsed;
  P.parse(xi, d, lay);
  const T* u_prev = s.usage + (t * B + b) * N;
  const T* wr_prev = s.read_weights + (t * B + b) * R * N;
  const T* ww_prev = s.write_weights + (t * B + b) * K * N;
  const T* wr_t = s.read_weights + ((t + 1) * B + b) * R * N;
  const T* ww_t = s.write_weights + ((t + 1) * B + b) * K * N;
  const T* p_prev = d.links ? s.precedence + (t * B + b) * K * N : nullptr;
  const int64_t sbk = (t * B + b) * K * N;
  const T* simulated = s.simulated + sbk;
  const T* alloc = s.allocation + sbk;
  const int32_t* order = s.order + sbk;
  const T* wcontent = s.write_content + sbk;
  const T* rcontent = s.read_content + (t * B + b) * R * N;
  const T* fw = d.links ? s.forward + (t * B + b) * R * K * N : nullptr;
  const T* bw = d.links ? s.backward + (t * B + b) * R * K * N : nullptr;
  const int64_t modes = 1 + 2 * K;

  // Gradients w.r.t. the activated interface.
  std::vector<T> g(lay.size, T(0));
  std::vector<T> dwr_t(dwr, dwr + R * N);  // dL/dw^r_t (from the future)
  std::vector<T> dwr_prev(R * N, T(0));
  std::vector<T> dww_t(dww, dww + K * N);  // only an external gradient on the last state
  std::vector<T> dfw(R * K * N), dbw(R * K * N), dcr(R * N);

  // 8. read vectors r = w^r M_t, then read weights.
  for (int64_t r = 0; r < R; ++r) {
    const T* drr = dreads + r * W;
    for (int64_t n = 0; n < N; ++n) {
      dwr_t[r * N + n] += dot(drr, Mt + n * W, W);
      T wv = wr_t[r * N + n];
      T* row = dM + n * W;
_Pragma("omp simd")
      for (int64_t w = 0; w < W; ++w) row[w] += wv * drr[w];
    }
  }
  const T* fmix = fw;  // the mixed weightings: the sharpened ones with sharpness
  const T* bmix = bw;
  if (d.sharpness && d.links) sharpen_all(fw, bw, d, P, ws, &fmix, &bmix);
  if (!d.links) std::copy(dwr_t.begin(), dwr_t.end(), dcr.begin());  // w^r = c^r
  for (int64_t r = 0; r < (d.links ? R : 0); ++r) {
    const T* pi = P.read_modes + r * modes;
    T* dpi = g.data() + lay.read_modes + r * modes;
    const T* dw = dwr_t.data() + r * N;
    for (int64_t k = 0; k < K; ++k) {
      dpi[k] = dot(dw, bmix + (r * K + k) * N, N);
      dpi[K + 1 + k] = dot(dw, fmix + (r * K + k) * N, N);
      for (int64_t n = 0; n < N; ++n) {
        dbw[(r * K + k) * N + n] = pi[k] * dw[n];
        dfw[(r * K + k) * N + n] = pi[K + 1 + k] * dw[n];
      }
      if (d.sharpness) {  // through the sharpening, into the unsharpened weightings
        const int64_t at = (r * K + k) * N;
        ws.e.assign(N, T(0));
        g[lay.backward_sharpness + r] += sharpen_backward(
            bw + at, N, P.backward_sharpness[r], bmix + at, dbw.data() + at, ws.e.data());
        std::copy(ws.e.begin(), ws.e.end(), dbw.data() + at);
        ws.e.assign(N, T(0));
        g[lay.forward_sharpness + r] += sharpen_backward(
            fw + at, N, P.forward_sharpness[r], fmix + at, dfw.data() + at, ws.e.data());
        std::copy(ws.e.begin(), ws.e.end(), dfw.data() + at);
      }
    }
    dpi[K] = dot(dw, rcontent + r * N, N);
    for (int64_t n = 0; n < N; ++n) dcr[r * N + n] = pi[K] * dw[n];
  }
  // 6. read content on M_t.
  ws.norms_new.resize(N);
  if (!d.masking) row_norms(Mt, N, W, ws.norms_new.data());  // masked heads take their own
  for (int64_t r = 0; r < R; ++r) {
    g[lay.read_strengths + r] = head_content_backward(
        Mt, ws.norms_new.data(), P.read_keys + r * W, d.masking ? P.read_masks + r * W : nullptr,
        P.read_strengths[r], rcontent + r * N, dcr.data() + r * N, N, W, dM,
        g.data() + lay.read_keys + r * W, d.masking ? g.data() + lay.read_masks + r * W : nullptr,
        ws.masked, ws.c);
  }
  // 7 + 5. directional weights, links and precedence, one pass per row.
  for (int64_t k = 0; k < (d.links ? K : 0); ++k) {
    T* dLk = dL + k * N * N;
    const T* Lk = Lt + k * N * N;
    const T* Lpk = Lprev + k * N * N;
    const T* wk = ww_t + k * N;
    const T* pk = p_prev + k * N;
    T* dpk = dp + k * N;
    T* dwk = dww_t.data() + k * N;
    // precedence p_t = (1 - sum w) p_{t-1} + w
    T sum_w = 0, inner = 0;
    for (int64_t n = 0; n < N; ++n) { sum_w += wk[n]; inner += dpk[n] * pk[n]; }
    ws.d.assign(N, T(0));  // dp_{t-1}
    T* dp_prev = ws.d.data();
    for (int64_t n = 0; n < N; ++n) {
      dwk[n] += dpk[n] - inner;
      dp_prev[n] = (T(1) - sum_w) * dpk[n];
    }
    ws.e.resize(N);
    link_backward_any(dLk, Lk, Lpk, wk, pk, wr_prev, dfw.data(), dbw.data(), dwr_prev.data(), dwk,
                      dp_prev, ws.e.data(), N, R, K, k);
    std::copy(dp_prev, dp_prev + N, dpk);
  }
  // 4. erase then write: M_t = M_{t-1} * psi * prod_k (1 - w_k e_k) + sum_k w_k v_k
  // (psi = 1 without de-allocation; its gradient goes to step 1 through dpsi_mem).
  std::vector<T> dpsi_mem(d.deallocation ? N : 0, T(0));
  {
    T* derase = g.data() + lay.erase;
    T* dvalues = g.data() + lay.write_vectors;
    std::vector<T> factors(K * W), keep(W), dkeep(W);
    for (int64_t n = 0; n < N; ++n) {
      T* drow = dM + n * W;
      const T* prow = Mprev + n * W;
      T* kp = keep.data();
      T* dkp = dkeep.data();
      const T psi_n = d.deallocation ? retention_of(P.free_gates, wr_prev, R, N, n) : T(1);
      std::fill(kp, kp + W, T(1));
      for (int64_t k = 0; k < K; ++k) {
        const T wkn = ww_t[k * N + n];
        const T* e = P.erase + k * W;
        T* f = factors.data() + k * W;
_Pragma("omp simd")
        for (int64_t w = 0; w < W; ++w) { f[w] = T(1) - wkn * e[w]; kp[w] = kp[w] * f[w]; }
      }
      if (d.deallocation) {
        T dpsi = 0;
_Pragma("omp simd reduction(+ : dpsi)")
        for (int64_t w = 0; w < W; ++w) {
          dpsi += drow[w] * prow[w] * kp[w];
          dkp[w] = drow[w] * prow[w] * psi_n;
        }
        dpsi_mem[n] = dpsi;
      } else {
_Pragma("omp simd")
        for (int64_t w = 0; w < W; ++w) dkp[w] = drow[w] * prow[w];
      }
      for (int64_t k = 0; k < K; ++k) {
        const T wkn = ww_t[k * N + n];
        const T* e = P.erase + k * W;
        const T* v = P.write_vectors + k * W;
        T* dv = dvalues + k * W;
        T* de = derase + k * W;
        T dw = 0;
        if (K == 1) {
_Pragma("omp simd reduction(+ : dw)")
          for (int64_t w = 0; w < W; ++w) {
            dv[w] += wkn * drow[w];
            dw += drow[w] * v[w] - dkp[w] * e[w];
            de[w] -= dkp[w] * wkn;
          }
        } else {
          for (int64_t w = 0; w < W; ++w) {
            T others = 1;
            for (int64_t k2 = 0; k2 < K; ++k2)
              if (k2 != k) others = others * factors[k2 * W + w];
            const T dterm = dkp[w] * others;
            dv[w] += wkn * drow[w];
            dw += drow[w] * v[w] - dterm * e[w];
            de[w] -= dterm * wkn;
          }
        }
        dww_t[k * N + n] += dw;
      }
      if (d.deallocation) {
_Pragma("omp simd")
        for (int64_t w = 0; w < W; ++w) drow[w] = drow[w] * (psi_n * kp[w]);  // now dL/dM_{t-1}
      } else {
_Pragma("omp simd")
        for (int64_t w = 0; w < W; ++w) drow[w] = drow[w] * kp[w];  // now dL/dM_{t-1}
      }
    }
  }
  // 3. write weights w = g^w (g^a a + (1 - g^a) c^w), content on M_{t-1}.
  std::vector<T> dalloc(K * N), dwcontent(K * N);
  ws.norms_old.resize(N);
  if (!d.masking) row_norms(Mprev, N, W, ws.norms_old.data());  // masked heads take their own
  for (int64_t k = 0; k < K; ++k) {
    const T ga = P.allocation_gates[k], gw = P.write_gates[k];
    T dgw = 0, dga = 0;
    for (int64_t n = 0; n < N; ++n) {
      const T dw = dww_t[k * N + n];
      const T a = alloc[k * N + n], c = wcontent[k * N + n];
      dgw += dw * (ga * a + (T(1) - ga) * c);
      dga += gw * dw * (a - c);
      dalloc[k * N + n] = gw * ga * dw;
      dwcontent[k * N + n] = gw * (T(1) - ga) * dw;
    }
    g[lay.write_gates + k] += dgw;
    g[lay.allocation_gates + k] += dga;
    g[lay.write_strengths + k] = head_content_backward(
        Mprev, ws.norms_old.data(), P.write_keys + k * W, d.masking ? P.write_masks + k * W : nullptr,
        P.write_strengths[k], wcontent + k * N, dwcontent.data() + k * N, N, W, dM,
        g.data() + lay.write_keys + k * W, d.masking ? g.data() + lay.write_masks + k * W : nullptr,
        ws.masked, ws.c);
  }
  // 2. allocation chain, heads in reverse.
  std::vector<T> dsim(N, T(0)), dnext(N);
  for (int64_t k = K - 1; k >= 0; --k) {
    const T* sk = simulated + k * N;
    T* dak = dalloc.data() + k * N;
    std::fill(dnext.begin(), dnext.end(), T(0));
    if (k + 1 < K) {  // s_{k+1} = s_k + (1 - s_k) g_k a_k
      const T gate = P.allocation_gates[k] * P.write_gates[k];
      T dgate = 0;
      for (int64_t n = 0; n < N; ++n) {
        const T a = alloc[k * N + n];
        dak[n] += dsim[n] * (T(1) - sk[n]) * gate;
        dgate += dsim[n] * (T(1) - sk[n]) * a;
        dnext[n] = dsim[n] * (T(1) - gate * a);
      }
      g[lay.allocation_gates + k] += dgate * P.write_gates[k];
      g[lay.write_gates + k] += dgate * P.allocation_gates[k];
    }
    allocation_backward(sk, order + k * N, dak, N, dnext.data(), ws.a);
    dsim.swap(dnext);
  }
  // 1. usage u_t = (u + w_hat - u w_hat) psi.
  for (int64_t n = 0; n < N; ++n) {
    const T dut = du[n] + dsim[n];
    T unwritten = 1;
    for (int64_t k = 0; k < K; ++k) unwritten = unwritten * (T(1) - ww_prev[k * N + n]);
    const T written = T(1) - unwritten;
    const T retention = retention_of(P.free_gates, wr_prev, R, N, n);
    const T dpsi = dut * (u_prev[n] + written - u_prev[n] * written) +
                   (d.deallocation ? dpsi_mem[n] : T(0));
    du[n] = dut * (T(1) - written) * retention;
    for (int64_t r = 0; r < R; ++r) {
      T others = 1;
      for (int64_t r2 = 0; r2 < R; ++r2)
        if (r2 != r) others = others * (T(1) - P.free_gates[r2] * wr_prev[r2 * N + n]);
      const T dterm = dpsi * others;
      g[lay.free_gates + r] -= dterm * wr_prev[r * N + n];
      dwr_prev[r * N + n] -= dterm * P.free_gates[r];
    }
  }
  std::copy(dwr_prev.begin(), dwr_prev.end(), dwr);
  std::fill(dww, dww + K * N, T(0));  // w^w_{t-1} enters only the usage, without gradient
  // Raw interface gradients through the nonlinearities.
  for (int64_t i = 0; i < lay.size; ++i) dxi[i] = g[i];
  auto strength_back = [&](int64_t at, int64_t count) {
    for (int64_t i = at; i < at + count; ++i) dxi[i] = g[i] * softplus_grad(xi[i]);
  };
  strength_back(lay.read_strengths, R);
  strength_back(lay.write_strengths, K);
  auto sigmoid_back = [&](int64_t at, int64_t count) {
    for (int64_t i = at; i < at + count; ++i) {
      const T y = P.v[i];
      dxi[i] = g[i] * (T(1) - y) * y;
    }
  };
  sigmoid_back(lay.erase, K * W);
  sigmoid_back(lay.free_gates, R);
  sigmoid_back(lay.allocation_gates, K);
  if (d.fixed_free >= 0) std::fill(dxi + lay.free_gates, dxi + lay.free_gates + R, T(0));
  if (d.fixed_allocation >= 0)
    std::fill(dxi + lay.allocation_gates, dxi + lay.allocation_gates + K, T(0));
  sigmoid_back(lay.write_gates, K);
  if (d.sharpness) strength_back(lay.forward_sharpness, 2 * R);  // oneplus (0 without links)
  if (d.masking) {  // m = sigmoid(x) (1 - mask_min) + mask_min
    for (int64_t i = lay.read_masks; i < lay.read_masks + (R + K) * W; ++i) {
      const T y = sigmoid(xi[i]);
      dxi[i] = g[i] * T(1 - d.mask_min) * (T(1) - y) * y;
    }
  }
  for (int64_t r = 0; r < (d.links ? R : 0); ++r) {
    const int64_t at = lay.read_modes + r * modes;
    T inner = 0;
    for (int64_t m = 0; m < modes; ++m) inner += g[at + m] * P.v[at + m];
    for (int64_t m = 0; m < modes; ++m) dxi[at + m] = (g[at + m] - inner) * P.v[at + m];
  }
}

}  // namespace

std::vector<torch::Tensor> fused_backward(
    std::vector<torch::Tensor> saved, std::shared_ptr<Boundaries> boundaries, torch::Tensor w_cat, torch::Tensor w_xi,
    torch::Tensor ln_w,  // layer norm gain [I], or empty
    torch::Tensor grad_hidden, torch::Tensor grad_reads,  // [B,T,H], [B,T,R,W]
    std::vector<torch::Tensor> grad_final,  // h, c, M, u, L, p, wr, ww (zeros if unused)
    double clip, bool oneplus, int64_t chunk, int64_t threads, double fixed_free,
    double fixed_allocation, bool deallocation, bool masking, double mask_min, bool sharpness) {
  auto hidden = saved[0], cell = saved[1], cell_raw = saved[2], gates = saved[3], xis = saved[4],
       reads = saved[5], inputs = saved[6], usage = saved[7], read_w = saved[8], write_w = saved[9],
       prec = saved[10], simulated = saved[11], alloc = saved[12], order = saved[13],
       wcontent = saved[14], rcontent = saved[15], fwd = saved[16], bwd = saved[17],
       keep = saved[18], tanh_cell = saved[19], xhat = saved[20], rstd = saved[21];
  const int64_t T = gates.size(0), B = gates.size(1), G = gates.size(2), H = hidden.size(2);
  const int64_t R = reads.size(2), W = reads.size(3), N = usage.size(2), K = write_w.size(2);
  Dims d{B, T, H, N, W, R, K, xis.size(2), G, chunk, clip, oneplus, fixed_free, fixed_allocation,
         deallocation, masking, mask_min, sharpness, prec.size(3) > 0, ln_w.numel() > 0};
  const int64_t NL = d.NL();
  auto ln_w_c = ln_w.contiguous();
  Layout lay(d);
  auto opts = gates.options();
  const bool masked = keep.numel() > 0;

  auto dh = grad_final[0].contiguous().clone();
  auto dc = grad_final[1].contiguous().clone();
  auto dM = grad_final[2].contiguous().clone();
  auto du = grad_final[3].contiguous().clone();
  auto dL = grad_final[4].contiguous().clone();
  auto dp = grad_final[5].contiguous().clone();
  auto dwr = grad_final[6].contiguous().clone();
  auto dww = grad_final[7].contiguous().clone();
  auto dr = torch::zeros({B, R, W}, opts);  // from the next step's controller input
  auto dZ = torch::zeros({T, B, G}, opts);
  auto dXi = torch::zeros({T, B, d.I}, opts);
  // With layer norm, the gradient w.r.t. the normalised xi (for the gain and bias).
  auto dXn = torch::zeros({d.layer_norm ? T : 0, B, d.I}, opts);
  auto gh = grad_hidden.transpose(0, 1).contiguous();  // [T, B, H]
  auto gr = grad_reads.transpose(0, 1).contiguous();   // [T, B, R, W]
  auto dinp = torch::zeros({B, R * W + H}, opts);  // d[r_{t-1}; h_{t-1}] of the step after
  const int64_t RW = R * W;

  AT_DISPATCH_FLOATING_TYPES(gates.scalar_type(), "fused_dnc_backward", [&] {
    using T_ = scalar_t;
    Saved<T_> s{usage.data_ptr<T_>(), read_w.data_ptr<T_>(), write_w.data_ptr<T_>(),
                prec.data_ptr<T_>(), simulated.data_ptr<T_>(), alloc.data_ptr<T_>(),
                order.data_ptr<int32_t>(), wcontent.data_ptr<T_>(), rcontent.data_ptr<T_>(),
                fwd.data_ptr<T_>(), bwd.data_ptr<T_>()};
    const bool* keep_p = masked ? keep.data_ptr<bool>() : nullptr;
    const auto& starts = boundaries->starts;
    const int64_t chunks = static_cast<int64_t>(starts.size());
    // States before steps t0 .. t1 of each chunk: slot 0 is the chunk's boundary,
    // the rest come from a pool of buffers that released boundaries and later
    // chunks return to, so the pass allocates (and page-faults) almost nothing
    // new. The slots are assigned here, before the threads start: every thread
    // then walks the same buffers, each over its own rows.
    std::vector<torch::Tensor> pool_M, pool_L, owned;
    std::vector<std::vector<T_*>> chunk_mem(chunks), chunk_link(chunks);
    for (int64_t m = chunks - 1; m >= 0; --m) {
      const int64_t t0 = starts[m], t1 = m + 1 < chunks ? starts[m + 1] : T;
      std::vector<torch::Tensor> mem_slots{boundaries->memory[m]}, link_slots{boundaries->link[m]};
      while (static_cast<int64_t>(mem_slots.size()) < t1 - t0 + 1) {
        if (pool_M.empty()) {
          pool_M.push_back(torch::empty({B, N, W}, opts));
          pool_L.push_back(torch::empty({B, K, NL, NL}, opts));
        }
        mem_slots.push_back(pool_M.back()); pool_M.pop_back();
        link_slots.push_back(pool_L.back()); pool_L.pop_back();
      }
      for (auto& slot : mem_slots) chunk_mem[m].push_back(slot.data_ptr<T_>());
      for (auto& slot : link_slots) chunk_link[m].push_back(slot.data_ptr<T_>());
      for (auto& slot : mem_slots) { pool_M.push_back(slot); owned.push_back(slot); }
      for (auto& slot : link_slots) { pool_L.push_back(slot); owned.push_back(slot); }
    }
    T_* drp = dr.data_ptr<T_>();
    T_* dhp = dh.data_ptr<T_>();
    T_* dcp = dc.data_ptr<T_>();
    T_* dinp_p = dinp.data_ptr<T_>();
    T_* dMp = dM.data_ptr<T_>(); T_* dup = du.data_ptr<T_>(); T_* dLp = dL.data_ptr<T_>();
    T_* dpp = dp.data_ptr<T_>(); T_* dwrp = dwr.data_ptr<T_>(); T_* dwwp = dww.data_ptr<T_>();
    // As in the forward: each thread takes its slice of the batch through every
    // chunk and step, last to first, without waiting for the others.
    for_slices(B, slice_grain(d), threads, [&](int64_t b0, int64_t b1) {
      const int64_t n = b1 - b0;
      Workspace<T_> ws;
      auto dh_s = dh.narrow(0, b0, n);
      auto dinp_s = dinp.narrow(0, b0, n);
      for (int64_t m = chunks - 1; m >= 0; --m) {
        const int64_t t0 = starts[m], t1 = m + 1 < chunks ? starts[m + 1] : T;
        const auto& mem_ptrs = chunk_mem[m];
        const auto& link_ptrs = chunk_link[m];
        recompute_chunk(t0, t1, b0, b1, xis.data_ptr<T_>(), write_w.data_ptr<T_>(),
                        read_w.data_ptr<T_>(), prec.data_ptr<T_>(), keep_p, mem_ptrs, link_ptrs,
                        d, lay);
        for (int64_t t = t1 - 1; t >= t0; --t) {
          const int64_t i = t - t0;
          const T_* grp = gr.data_ptr<T_>() + t * B * RW;
          const T_* ghp = gh.data_ptr<T_>() + t * B * H;
          T_* dxp = dXi.data_ptr<T_>() + t * B * d.I;
          const T_* xip = xis.data_ptr<T_>() + t * B * d.I;
          const T_* Mprev = mem_ptrs[i];
          const T_* Mt = mem_ptrs[i + 1];
          const T_* Lprev = link_ptrs[i];
          const T_* Lt = link_ptrs[i + 1];
          for (int64_t b = b0; b < b1; ++b) {
            // dL/dr_t and dL/dh_t: the output layer's share plus the next step's input.
            T_* drb = drp + b * RW;
            T_* dhb = dhp + b * H;
            const T_* dib = dinp_p + b * (RW + H);
            for (int64_t j = 0; j < RW; ++j) drb[j] += grp[b * RW + j] + dib[j];
            for (int64_t j = 0; j < H; ++j) dhb[j] += ghp[b * H + j] + dib[RW + j];
            const bool on = keep_p == nullptr || keep_p[b * T + t];
            if (!on) continue;  // state and r_t carried: adjoints pass through unchanged
            memory_backward(xip + b * d.I, Mprev + b * N * W, Mt + b * N * W,
                            Lprev + b * K * NL * NL, Lt + b * K * NL * NL, s, t, b, d, lay, drb,
                            dMp + b * N * W, dup + b * N, dLp + b * K * NL * NL, dpp + b * K * NL,
                            dwrp + b * R * N, dwwp + b * K * N, dxp + b * d.I, ws);
            if (d.layer_norm) {  // through the normalisation, into the raw xi
              T_* dn = dXn.data_ptr<T_>() + (t * B + b) * d.I;
              std::copy(dxp + b * d.I, dxp + (b + 1) * d.I, dn);
              layer_norm_backward(dxp + b * d.I, d.I, ln_w_c.data_ptr<T_>(),
                                  xhat.data_ptr<T_>() + (t * B + b) * d.I,
                                  rstd.data_ptr<T_>()[t * B + b]);
            }
            std::fill(drb, drb + RW, T_(0));
          }
          // h_t feeds the interface layer.
          dh_s.addmm_(dXi[t].narrow(0, b0, n), w_xi);
          // Controller backward: clipping, LSTM cell.
          T_* dzp = dZ.data_ptr<T_>() + t * B * G;
          const T_* gp = gates.data_ptr<T_>() + t * B * G;
          const T_* craw = cell_raw.data_ptr<T_>() + t * B * H;
          const T_* tanh_c = tanh_cell.data_ptr<T_>() + t * B * H;
          const T_* cprev = cell.data_ptr<T_>() + t * B * H;
          for (int64_t b = b0; b < b1; ++b) {
            const bool on = keep_p == nullptr || keep_p[b * T + t];
            if (!on) continue;  // h, c carried: dh, dc pass through
            const int64_t o = b * G;
            T_* dhb = dhp + b * H;
            T_* dcb = dcp + b * H;
            T_* dzb = dzp + o;
            const T_* gb = gp + o;
            const T_* cb = craw + b * H;
            const T_* tcb = tanh_c + b * H;
            const T_* cpb = cprev + b * H;
_Pragma("omp simd")
            for (int64_t j = 0; j < H; ++j) {
              const T_ ig = gb[j], fg = gb[H + j], gg = gb[2 * H + j], og = gb[3 * H + j];
              const T_ c = cb[j];
              const T_ tc = tcb[j];
              const T_ hraw = og * tc;
              const T_ dhr = dhb[j] * clamp_pass(hraw, clip);
              const T_ dcr = dcb[j] * clamp_pass(c, clip) + dhr * og * (T_(1) - tc * tc);
              const T_ dog = dhr * tc;
              dzb[j] = dcr * gg * (T_(1) - ig) * ig;
              dzb[H + j] = dcr * cpb[j] * (T_(1) - fg) * fg;
              dzb[2 * H + j] = dcr * ig * (T_(1) - gg * gg);
              dzb[3 * H + j] = dog * (T_(1) - og) * og;
              dcb[j] = dcr * fg;
              dhb[j] = 0;
            }
          }
          // [r_{t-1}; h_{t-1}] fed the gates; added to dr, dh at the next iteration.
          at::mm_out(dinp_s, dZ[t].narrow(0, b0, n), w_cat);
        }
      }
    });
    boundaries->memory.clear();
    boundaries->link.clear();
    dr.add_(dinp.narrow(1, 0, RW).reshape({B, R, W}));
    dh.add_(dinp.narrow(1, RW, H));
  });
  auto dZ_flat = dZ.reshape({T * B, G});
  auto d_w_cat = torch::mm(dZ_flat.t(), inputs.reshape({T * B, R * W + H}));
  auto dXi_flat = dXi.reshape({T * B, d.I});
  auto d_w_xi = torch::mm(dXi_flat.t(), hidden.narrow(0, 1, T).reshape({T * B, H}));
  auto d_b_xi = dXi_flat.sum(0);
  torch::Tensor d_ln_w, d_ln_b;  // undefined (None) without layer norm
  if (d.layer_norm) {
    auto dXn_flat = dXn.reshape({T * B, d.I});
    d_ln_w = (dXn_flat * xhat.reshape({T * B, d.I})).sum(0);
    d_ln_b = dXn_flat.sum(0);
  }
  // A per-step term added to the raw xi (xi_context) has the raw xi's gradient.
  return {dZ.transpose(0, 1), d_w_cat, d_w_xi, d_b_xi, dh, dc, dr, dM, du, dL, dp, dwr, dww,
          d_ln_w, d_ln_b, dXi.transpose(0, 1)};
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  pybind11::class_<Boundaries, std::shared_ptr<Boundaries>>(m, "Boundaries");
  m.def("forward", &fused_forward, "fused DNC recurrence, forward");
  m.def("backward", &fused_backward, "fused DNC recurrence, backward");
}
