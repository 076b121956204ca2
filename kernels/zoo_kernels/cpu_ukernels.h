// The CPU features the micro-kernels are chosen by (see cpu_popcount_ukernels.h for the popcount conv's table).
#pragma once

#include <cstdint>

namespace zoo_xnor_cpu {

// The CPU's features, detected once (__builtin_cpu_supports; all false off x86-64).
struct CpuFeatures {
  bool avx2, fma, avx512f, avx512bw, avx512vl, avx512vpopcntdq, avx512_vnni, amx_int8, amx_bf16;
  bool avx512() const { return avx512f && avx512bw && avx512vl && avx512vpopcntdq; }  // the avx512 variant's ISA
};
const CpuFeatures& cpu_features();

// The passes outside the micro-kernel tables (the int8 route's level bytes and epilogue, pooling, fingerprints) are
// written once, as always-inline templates, and instantiated twice: in a function under ZOO_TARGET_AVX2 (AVX2 and
// FMA: std::fma one instruction, not a libm call) and in a baseline one, picked at run time by avx2_fma(). No global
// ISA flags: the library loads on every CPU of its architecture.
#if defined(__x86_64__)
#define ZOO_TARGET_AVX2 __attribute__((target("avx2,fma,popcnt")))
#else
#define ZOO_TARGET_AVX2
#endif
#define ZOO_INLINE inline __attribute__((always_inline))
inline bool avx2_fma() { return cpu_features().avx2 && cpu_features().fma; }

}  // namespace zoo_xnor_cpu
