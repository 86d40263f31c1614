"""Multi-stage exact top-k selection on the GPU (CUDA C compiled by CuPy's NVRTC).

Why not ``cupy.argpartition``: it sorts whole rows, which costs 90%+ of a brute-force search. Here each
thread scans a strided slice of a row and keeps a sorted top-K in registers; its K survivors go to the next
stage, which does the same over far fewer candidates, until one thread per row holds the answer. Order is
(distance, id) so results match every other exact backend, ties included.
"""

from __future__ import annotations

import functools

KERNEL_TEMPLATE = r"""
#define K {k}
#define UNROLL {unroll}
#define INSERT {insert}
extern "C" __global__ void topk_stage(
    const float* __restrict__ vals, const long long* __restrict__ ids, const float* __restrict__ bias,
    const int has_ids, const int has_bias, const float alpha,
    const long long ld, const int m, const int threads_per_row, const long long id_offset,
    float* __restrict__ out_vals, long long* __restrict__ out_ids,
    const long long out_ld, const long long out_off)
{{
    const int t = blockIdx.x * blockDim.x + threadIdx.x;
    const int r = blockIdx.y;
    if (t >= threads_per_row) return;
    float bv[K];
    long long bi[K];
    #pragma unroll
    for (int j = 0; j < K; j++) {{ bv[j] = __int_as_float(0x7f800000); bi[j] = 0x7fffffffffffffffLL; }}
    const float* row = vals + (long long)r * ld;
    const long long* id_row = ids + (long long)r * ld;
    // UNROLL independent loads per iteration keep several memory requests in flight per thread.
    for (long long c0 = t; c0 < m; c0 += (long long)UNROLL * threads_per_row) {{
        float vals_u[UNROLL];
        long long ids_u[UNROLL];
        #pragma unroll
        for (int u = 0; u < UNROLL; u++) {{
            const long long c = c0 + (long long)u * threads_per_row;
            const bool in = c < m;
            const float raw = in ? row[c] : 0.0f;
            vals_u[u] = !in ? __int_as_float(0x7f800000) : (has_bias ? fmaf(alpha, raw, bias[c]) : raw);
            ids_u[u] = !in ? 0x7fffffffffffffffLL : (has_ids ? id_row[c] : c + id_offset);
        }}
        #pragma unroll
        for (int u = 0; u < UNROLL; u++) {{
            const float v = vals_u[u];
            const long long id = ids_u[u];
            if (v < bv[K - 1] || (v == bv[K - 1] && id < bi[K - 1])) {{
                INSERT
            }}
        }}
    }}
    const long long o = (long long)r * out_ld + out_off + (long long)t * K;
    #pragma unroll
    for (int j = 0; j < K; j++) {{ out_vals[o + j] = bv[j]; out_ids[o + j] = bi[j]; }}
}}
"""

# Small K: the list is kept in registers, so the insertion is a fully unrolled compare-swap pass with
# static indices (no local memory). Larger K: a shifting insertion in local memory.
INSERT_REGISTERS = r"""
            bv[K - 1] = v; bi[K - 1] = id;
            _Pragma("unroll")
            for (int j = K - 1; j > 0; --j) {
                const bool up = bv[j] < bv[j - 1] || (bv[j] == bv[j - 1] && bi[j] < bi[j - 1]);
                const float tv = up ? bv[j - 1] : bv[j];
                const long long ti = up ? bi[j - 1] : bi[j];
                bv[j - 1] = up ? bv[j] : bv[j - 1]; bi[j - 1] = up ? bi[j] : bi[j - 1];
                bv[j] = tv; bi[j] = ti;
            }
"""
INSERT_LOCAL = r"""
            int j = K - 1;
            while (j > 0 && (v < bv[j - 1] || (v == bv[j - 1] && id < bi[j - 1]))) {
                bv[j] = bv[j - 1]; bi[j] = bi[j - 1]; j--;
            }
            bv[j] = v; bi[j] = id;
"""
REGISTER_MAX_K = 32

BLOCK = 256
# Threads per launch: enough to stream memory on a large GPU, few enough that each thread scans a long
# slice (fewer insertions per element and fewer candidates for the next stage).
TARGET_THREADS = 1 << 16
MAX_K = 128


# Loads in flight per thread. Measured on an H100 (benchmarks/gpu_knn.py --variants, N=1M, d=128, k=10):
# 4 loads with 64K threads per launch was best at every batch size (q=1024: 11.8 ms vs 15.2 ms with 1 load).
UNROLL = 4


@functools.cache
def _kernel(k: int, unroll: int):
    import cupy as cp

    insert = INSERT_REGISTERS if k <= REGISTER_MAX_K else INSERT_LOCAL
    source = KERNEL_TEMPLATE.format(k=k, unroll=unroll, insert=" ".join(insert.split("\n")))
    return cp.RawKernel(source, "topk_stage")


def min_scan(k: int) -> int:
    """Elements each thread scans at least: every stage shrinks the candidates by >= 8x."""
    return max(8 * k, 128)


def threads_for(rows: int, m: int, k: int) -> int:
    """Threads per row for one stage over ``m`` candidates."""
    by_work = -(-m // min_scan(k))
    by_occupancy = max(1, TARGET_THREADS // max(1, rows))
    return max(1, min(by_work, by_occupancy))


def launch_stage(vals, ids, bias, alpha, rows, m, ld, t, k, id_offset, out_vals, out_ids, out_off):
    """Run one selection stage: rows x m input -> rows x (t*k) sorted-per-thread candidates."""
    import cupy as cp
    import numpy as np

    dummy_f = bias if bias is not None else vals
    dummy_i = ids if ids is not None else out_ids
    grid = (-(-t // BLOCK), rows)
    _kernel(k, UNROLL)(
        grid,
        (min(BLOCK, t),),
        (
            vals, dummy_i, dummy_f,
            np.int32(ids is not None), np.int32(bias is not None), np.float32(alpha),
            np.int64(ld), np.int32(m), np.int32(t), np.int64(id_offset),
            out_vals, out_ids, np.int64(out_ids.shape[1]), np.int64(out_off),
        ),
    )
    del cp


def reduce_candidates(vals, ids, k: int):
    """Repeat stages over (rows x m) candidates until each row holds its sorted top-k."""
    import cupy as cp

    rows, m = vals.shape
    while True:
        t = threads_for(rows, m, k)
        out_vals = cp.empty((rows, t * k), dtype=cp.float32)
        out_ids = cp.empty((rows, t * k), dtype=cp.int64)
        launch_stage(vals, ids, None, 1.0, rows, m, m, t, k, 0, out_vals, out_ids, 0)
        if t == 1:
            return out_ids, out_vals
        vals, ids, m = out_vals, out_ids, t * k
