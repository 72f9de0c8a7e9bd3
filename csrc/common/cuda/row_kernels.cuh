// The row kernels behind common/cuda/row_ops.h (row_dots, weighted_rows, combine_rows; host side:
// row_kernels.cu). Compiled by nvcc and by the host emulator (emulator/).
#pragma once
#include <ATen/OpMathType.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "common/cuda/block_reduce.cuh"
#include "common/cuda/launch.cuh"
#include "common/cuda/vector_access.cuh"

namespace seqops::cuda {

// ------------------------------------------------------------------------------ row_dots
// A skinny GEMM, S = X V^T per batch element, tiled through shared memory. A block owns
// kDotsRows rows of one batch element and TN of the K vectors (TN sized to K by the host: 2, 8
// or 32); each thread owns kDotsRowsPerThread rows (tid, tid + kDotsThreads) and all TN vectors,
// so every x element is read from DRAM once per vector tile (once in all when K <= 32) and from
// shared memory once, and the vector values are warp-uniform shared-memory broadcasts. x comes
// in 16-byte loads when its rows are 16-byte aligned (`vector`), else one element per load.
constexpr int kDotsThreads = 128;
constexpr int kDotsRowsPerThread = 2;
constexpr int kDotsRows = kDotsThreads * kDotsRowsPerThread;  // 256
constexpr int kDotsDepth = 16;                                // d columns per shared tile

template <typename T, int TN, typename acc_t = at::opmath_type<T>>
__global__ void __launch_bounds__(kDotsThreads)
    row_dots_kernel(const T* __restrict__ x, const acc_t* __restrict__ v, int64_t v_batch_stride,
                    const bool* __restrict__ mask, acc_t* __restrict__ out, int64_t L, int64_t D,
                    int64_t K, int64_t row_tiles, int64_t k_tiles, bool vector) {
  // xs[dd][row]: padded so that the two rows a warp stores per instruction (16 apart) and the
  // consecutive rows it reads per instruction fall in distinct banks.
  __shared__ acc_t xs[kDotsDepth][kDotsRows + 1];
  __shared__ acc_t vs[kDotsDepth][TN];
  __shared__ bool keep_s[kDotsRows];

  const int64_t block = blockIdx.x;  // (b, row tile, k tile), k tile fastest (x tile reuse in L2)
  const int64_t kt = block % k_tiles;
  const int64_t rt = (block / k_tiles) % row_tiles;
  const int64_t b = block / (k_tiles * row_tiles);
  const int64_t t0 = rt * kDotsRows, k0 = kt * TN;
  const int tid = threadIdx.x, lane = tid % kWarp, warp = tid / kWarp;
  const T* xb = x + b * L * D;
  const acc_t* vb = v + b * v_batch_stride;

  for (int r = tid; r < kDotsRows; r += kDotsThreads) {
    const int64_t t = t0 + r;
    keep_s[r] = t < L && (mask == nullptr || mask[b * L + t]);
  }
  __syncthreads();

  acc_t acc[kDotsRowsPerThread][TN];
#pragma unroll
  for (int r = 0; r < kDotsRowsPerThread; ++r)
#pragma unroll
    for (int n = 0; n < TN; ++n) acc[r][n] = acc_t(0);

  // Scalar load mapping for the x tile: a warp instruction covers 2 rows x 16 columns (two full
  // 32-byte sectors for 16-bit types); pair index P = warp * 32 + i covers all 256 rows.
  const int dd_load = lane % 16, half = lane / 16;
  constexpr int kPairsPerWarp = kDotsRows / 2 / (kDotsThreads / kWarp);  // 32
  // Vector load mapping: kRowLanes lanes read a row's 16 columns, kVec each; a warp instruction
  // covers kWarp / kRowLanes consecutive rows, a warp kWarpRows rows.
  constexpr int kVec = kValuesPer16Bytes<T> < kDotsDepth ? kValuesPer16Bytes<T> : kDotsDepth;
  constexpr int kRowLanes = kDotsDepth / kVec;
  constexpr int kWarpRows = kDotsRows / (kDotsThreads / kWarp);  // 64
  const int vec_part = lane % kRowLanes * kVec, vec_row = warp * kWarpRows + lane / kRowLanes;

  for (int64_t d0 = 0; d0 < D; d0 += kDotsDepth) {
    if (vector) {  // D is a multiple of kVec: a run of kVec columns is in or out whole
      const int64_t d = d0 + vec_part;
#pragma unroll 4
      for (int i = 0; i < kWarpRows; i += kWarp / kRowLanes) {
        const int row = vec_row + i;
        T run[kVec];
        if (keep_s[row] && d < D) {
          load_values(run, xb + (t0 + row) * D + d);
        } else {
#pragma unroll
          for (int e = 0; e < kVec; ++e) run[e] = T(0);
        }
#pragma unroll
        for (int e = 0; e < kVec; ++e) xs[vec_part + e][row] = static_cast<acc_t>(run[e]);
      }
    } else {
      const int64_t d = d0 + dd_load;
#pragma unroll 8
      for (int i = 0; i < kPairsPerWarp; ++i) {
        const int pair = warp * kPairsPerWarp + i;
        const int row = (pair / 16) * 32 + half * 16 + pair % 16;
        acc_t value = acc_t(0);
        if (keep_s[row] && d < D) value = static_cast<acc_t>(xb[(t0 + row) * D + d]);
        xs[dd_load][row] = value;
      }
    }
#pragma unroll
    for (int e = tid; e < TN * kDotsDepth; e += kDotsThreads) {
      const int n = e / kDotsDepth, dd = e % kDotsDepth;
      const int64_t k = k0 + n, dv = d0 + dd;
      vs[dd][n] = (k < K && dv < D) ? vb[k * D + dv] : acc_t(0);
    }
    __syncthreads();
#pragma unroll
    for (int dd = 0; dd < kDotsDepth; ++dd) {
      acc_t xv[kDotsRowsPerThread];
#pragma unroll
      for (int r = 0; r < kDotsRowsPerThread; ++r) xv[r] = xs[dd][tid + r * kDotsThreads];
#pragma unroll
      for (int n = 0; n < TN; ++n) {
        const acc_t vv = vs[dd][n];
#pragma unroll
        for (int r = 0; r < kDotsRowsPerThread; ++r) acc[r][n] += xv[r] * vv;
      }
    }
    __syncthreads();
  }

#pragma unroll
  for (int r = 0; r < kDotsRowsPerThread; ++r) {
    const int row = tid + r * kDotsThreads;
    const int64_t t = t0 + row;
    if (t >= L) continue;
    const bool keep = keep_s[row];
#pragma unroll
    for (int n = 0; n < TN; ++n) {
      const int64_t k = k0 + n;
      if (k < K) out[(b * K + k) * L + t] = keep ? acc[r][n] : acc_t(0);
    }
  }
}

// ------------------------------------------------------------------------------ weighted_rows
// out[b, k, d] over one sequence chunk: a block owns (batch, chunk, wr_col_tile<T> columns,
// kWrHeads coefficient rows); each thread owns a run of 16 bytes of columns (wr_cols<T>
// values: 8 at 16 bits, 4 floats, 2 doubles), keeps kWrHeads x wr_cols<T> accumulators and
// streams the chunk's rows, reading each x element once per group of kWrHeads coefficient rows:
// one 16-byte load per row when rows are 16-byte aligned (`vector`), else one element per load.
// The coefficients of 32 rows at a time are staged in shared memory (broadcast reads). Masked
// rows are never loaded (their x and coefficients count as 0).
constexpr int kWrThreads = 128;
constexpr int kWrHeads = 8;
constexpr int kWrRowTile = 32;
constexpr int kWrUnroll = 4;
template <typename T>
constexpr int wr_cols = kValuesPer16Bytes<T>;
template <typename T>
constexpr int64_t wr_col_tile = int64_t{kWrThreads} * wr_cols<T>;

template <typename T, typename acc_t = at::opmath_type<T>>
__global__ void __launch_bounds__(kWrThreads)
    weighted_rows_kernel(const acc_t* __restrict__ coef, const T* __restrict__ x,
                         const bool* __restrict__ mask, acc_t* __restrict__ partial, int64_t L,
                         int64_t D, int64_t K, int64_t chunks, int64_t k_groups, int64_t d_tiles,
                         bool vector) {
  constexpr int kCols = wr_cols<T>;
  __shared__ acc_t cs[kWrRowTile][kWrHeads];
  __shared__ bool keep_s[kWrRowTile];

  // (b, chunk, d tile, k group), k group fastest: the groups reading the same x tile run together.
  const int64_t block = blockIdx.x;
  const int64_t kg = block % k_groups;
  const int64_t dt = (block / k_groups) % d_tiles;
  const int64_t c = (block / (k_groups * d_tiles)) % chunks;
  const int64_t b = block / (k_groups * d_tiles * chunks);
  const int64_t k0 = kg * kWrHeads;
  const int64_t t_begin = chunk_begin(c, chunks, L), t_end = chunk_begin(c + 1, chunks, L);
  const int tid = threadIdx.x;
  const int64_t col = dt * wr_col_tile<T> + tid * kCols;  // this thread's run: [col, col + kCols)
  const T* xb = x + b * L * D + col;

  acc_t acc[kWrHeads][kCols];
#pragma unroll
  for (int k = 0; k < kWrHeads; ++k)
#pragma unroll
    for (int j = 0; j < kCols; ++j) acc[k][j] = acc_t(0);

  for (int64_t tile = t_begin; tile < t_end; tile += kWrRowTile) {
    for (int e = tid; e < kWrRowTile * kWrHeads; e += kWrThreads) {
      const int k = e / kWrRowTile, r = e % kWrRowTile;  // consecutive threads: consecutive t
      const int64_t t = tile + r;
      const bool keep = t < t_end && (mask == nullptr || mask[b * L + t]);
      cs[r][k] = (keep && k0 + k < K) ? coef[(b * K + k0 + k) * L + t] : acc_t(0);
      if (k == 0) keep_s[r] = keep;
    }
    __syncthreads();
    for (int r0 = 0; r0 < kWrRowTile; r0 += kWrUnroll) {
      T xv[kWrUnroll][kCols];
#pragma unroll
      for (int q = 0; q < kWrUnroll; ++q) {
        const T* row = xb + (tile + r0 + q) * D;
        if (keep_s[r0 + q] && vector && col < D) {  // D is a multiple of kCols
          load_values(xv[q], row);
        } else {
#pragma unroll
          for (int j = 0; j < kCols; ++j) xv[q][j] = (keep_s[r0 + q] && col + j < D) ? row[j] : T(0);
        }
      }
#pragma unroll
      for (int q = 0; q < kWrUnroll; ++q) {
#pragma unroll
        for (int k = 0; k < kWrHeads; ++k) {
          const acc_t w = cs[r0 + q][k];
#pragma unroll
          for (int j = 0; j < kCols; ++j) acc[k][j] += w * static_cast<acc_t>(xv[q][j]);
        }
      }
    }
    __syncthreads();
  }

#pragma unroll
  for (int k = 0; k < kWrHeads; ++k) {
    if (k0 + k >= K) break;
#pragma unroll
    for (int j = 0; j < kCols; ++j)
      if (col + j < D) partial[((b * chunks + c) * K + k0 + k) * D + col + j] = acc[k][j];
  }
}

// ------------------------------------------------------------------------------ combine_rows
// out[b, t, :] = base + coef[:, t]^T v for a tile of kCrRows rows and kCrCols * kCrThreads
// columns per block: each v element loaded (from L2) once per block serves kCrRows rows.
constexpr int kCrThreads = 128;
constexpr int kCrCols = 2;
constexpr int kCrColTile = kCrThreads * kCrCols;  // 256
constexpr int kCrRows = 8;
constexpr int kCrK = 32;  // coefficient rows staged per step

template <typename T, typename acc_t = at::opmath_type<T>>
__global__ void __launch_bounds__(kCrThreads)
    combine_rows_kernel(const acc_t* __restrict__ coef, const acc_t* __restrict__ v,
                        const acc_t* __restrict__ base, const bool* __restrict__ mask,
                        T* __restrict__ out, int64_t L, int64_t D, int64_t K, int64_t row_tiles,
                        int64_t d_tiles) {
  __shared__ acc_t cs[kCrK][kCrRows];
  // (b, row tile, d tile), d tile fastest.
  const int64_t block = blockIdx.x;
  const int64_t dt = block % d_tiles;
  const int64_t rt = (block / d_tiles) % row_tiles;
  const int64_t b = block / (d_tiles * row_tiles);
  const int64_t t0 = rt * kCrRows;
  const int tid = threadIdx.x;

  int64_t cols[kCrCols];
  acc_t start[kCrCols];
#pragma unroll
  for (int j = 0; j < kCrCols; ++j) {
    cols[j] = dt * kCrColTile + tid + j * kCrThreads;
    start[j] = (base != nullptr && cols[j] < D) ? base[b * D + cols[j]] : acc_t(0);
  }
  acc_t acc[kCrRows][kCrCols];
#pragma unroll
  for (int r = 0; r < kCrRows; ++r)
#pragma unroll
    for (int j = 0; j < kCrCols; ++j) acc[r][j] = start[j];

  for (int64_t k0 = 0; k0 < K; k0 += kCrK) {
    for (int e = tid; e < kCrK * kCrRows; e += kCrThreads) {
      const int k = e / kCrRows, r = e % kCrRows;
      const int64_t t = t0 + r;
      cs[k][r] = (k0 + k < K && t < L) ? coef[(b * K + k0 + k) * L + t] : acc_t(0);
    }
    __syncthreads();
    const int kn = static_cast<int>(K - k0 < kCrK ? K - k0 : kCrK);
    for (int k = 0; k < kn; ++k) {
      acc_t vv[kCrCols];
#pragma unroll
      for (int j = 0; j < kCrCols; ++j)
        vv[j] = cols[j] < D ? v[(b * K + k0 + k) * D + cols[j]] : acc_t(0);
#pragma unroll
      for (int r = 0; r < kCrRows; ++r) {
        const acc_t w = cs[k][r];
#pragma unroll
        for (int j = 0; j < kCrCols; ++j) acc[r][j] += w * vv[j];
      }
    }
    __syncthreads();
  }

#pragma unroll
  for (int r = 0; r < kCrRows; ++r) {
    const int64_t t = t0 + r;
    if (t >= L) break;
    const bool keep = mask == nullptr || mask[b * L + t];
#pragma unroll
    for (int j = 0; j < kCrCols; ++j)
      if (cols[j] < D) out[(b * L + t) * D + cols[j]] = keep ? static_cast<T>(acc[r][j]) : T(0);
  }
}

}  // namespace seqops::cuda
