// Micro-kernels of the popcount conv on raw pointers (no ATen types), each in a translation unit compiled for its ISA
// and called by the driver (cpu_popcount.cpp) only where the CPU has that ISA.
#pragma once

#include <cstdint>

namespace zoo_xnor_cpu {

// The CPU's features, detected once (__builtin_cpu_supports; all false off x86-64).
struct CpuFeatures {
  bool avx2, avx512f, avx512bw, avx512vl, avx512vpopcntdq, avx512_vnni, amx_int8, amx_bf16;
  bool avx512() const { return avx512f && avx512bw && avx512vl && avx512vpopcntdq; }  // popcount_block_avx512's ISA
};
const CpuFeatures& cpu_features();

#if defined(__x86_64__)
#define ZOO_HAVE_AVX512_UKERNEL 1
#endif

// AVX-512 VPOPCNTDQ (cpu_popcount_avx512.cpp). The filters w[o] (O rows of K32 int32 words; as uint64 words
// B[o, k] = w[o, 2k] | w[o, 2k + 1] << 32, K64 = ceil(K32 / 2) of them, the odd last one paired with a zero word as
// in the rows of A) re-laid out k-major in blocks of 32 filters: Wt[32 b K64 + 32 k + c] = B[32 b + c, k], zero past
// O; size_kmajor(O, K64) words.
int64_t size_kmajor(int64_t O, int64_t K64);
void layout_kmajor(const int32_t* w, int64_t O, int64_t K32, uint64_t* Wt);

#ifdef ZOO_HAVE_AVX512_UKERNEL
// D[i * ldd + j] = sum_k popcount(A[i * K64 + k] ^ B[o0 + j, k]) for rows i < rows and filters j < oe, where
// Wt = the k-major weights + o0 K64 (o0 a multiple of 32), o0 + oe <= O. Only where cpu_features().avx512().
void popcount_block_avx512(const uint64_t* A, int64_t rows, const uint64_t* Wt, int64_t oe, int64_t K64, int32_t* D,
                           int64_t ldd);
#endif

}  // namespace zoo_xnor_cpu
