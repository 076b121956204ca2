// The CPU features the micro-kernels are chosen by (see cpu_popcount_ukernels.h for the popcount conv's table).
#pragma once

#include <cstdint>

namespace zoo_xnor_cpu {

// The CPU's features, detected once (__builtin_cpu_supports; all false off x86-64).
struct CpuFeatures {
  bool avx2, avx512f, avx512bw, avx512vl, avx512vpopcntdq, avx512_vnni, amx_int8, amx_bf16;
  bool avx512() const { return avx512f && avx512bw && avx512vl && avx512vpopcntdq; }  // the avx512 variant's ISA
};
const CpuFeatures& cpu_features();

}  // namespace zoo_xnor_cpu
