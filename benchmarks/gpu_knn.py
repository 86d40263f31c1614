"""Brute-force kNN on one GPU: perfray's CuPy backend vs CuPy GEMM + argpartition vs torch GEMM + topk,
measured side by side in one run, with the roofline floor. Runs without Ray (plain classes only).

    python benchmarks/gpu_knn.py [--n 1000000] [--dim 128] [--k 10] [--batches 1,16,128,1024]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np


def timed(fn, sync, repeats: int, warmup: int = 2) -> float:
    """Median seconds of fn() with a device sync before the clock stops."""
    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--batches", default="1,16,128,1024")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--mem-bw", type=float, default=None,
                        help="bytes/s; default: the device's peak (perfray.backends.device_peaks, by NVML name)")
    parser.add_argument("--fp32-flops", type=float, default=None, help="FLOP/s; default: the device's FP32 peak")
    parser.add_argument("--check-queries", type=int, default=64, help="queries checked against float64")
    parser.add_argument("--json", default=None, help="also write the rows here")
    parser.add_argument("--open-loop-qps", type=float, default=0, help="also drive the worker open loop")
    parser.add_argument("--open-loop-s", type=float, default=5.0)
    parser.add_argument("--variants", action="store_true", help="time top-k kernel settings side by side")
    args = parser.parse_args()

    import cupy as cp

    from perfray.backends.cupy_backend import CupyBackend
    from perfray.backends.device_peaks import device_peaks, roofline_floor_s
    from perfray.sut.gpu_search import GpuSearchWorker

    rng = np.random.default_rng(0)
    base = rng.standard_normal((args.n, args.dim), dtype=np.float32)
    batches = [int(b) for b in args.batches.split(",")]
    queries = rng.standard_normal((max(batches), args.dim), dtype=np.float32)
    ours = CupyBackend()
    ours.build(base)
    print(f"device: {ours.device_name()}  N={args.n:,} d={args.dim} k={args.k}")
    peaks = device_peaks(ours.device_name()) or {}
    mem_bw, fp32_flops = args.mem_bw or peaks.get("mem_bw"), args.fp32_flops or peaks.get("fp32_flops")
    if mem_bw and fp32_flops:
        print(f"roofline: {mem_bw / 1e12:.2f} TB/s, {fp32_flops / 1e12:.1f} TFLOP/s FP32 "
              f"({'given' if args.mem_bw or args.fp32_flops else peaks['device'] + ' peaks'})")
    else:
        print("roofline: unknown device (not in perfray.backends.device_peaks); give --mem-bw and --fp32-flops for a "
              "floor")

    # Exactness on a sample against float64 on the host.
    sample = queries[: args.check_queries]
    got_ids, got_d = ours.search(sample, args.k)
    ref_d = np.empty_like(got_d, dtype=np.float64)
    ref_ids = np.empty_like(got_ids)
    for i, q in enumerate(sample.astype(np.float64)):
        d = ((base.astype(np.float64) - q) ** 2).sum(1) if args.n <= 200_000 else None
        if d is None:  # chunked float64 on the host for big N
            d = np.concatenate([((base[lo:lo + 200_000].astype(np.float64) - q) ** 2).sum(1)
                                for lo in range(0, args.n, 200_000)])
        order = np.argsort(d, kind="stable")[: args.k]
        ref_ids[i], ref_d[i] = order, d[order]
    same = (got_ids == ref_ids).mean()
    dist_err = float(np.max(np.abs(got_d - ref_d) / np.maximum(ref_d, 1e-6)))
    print(f"exactness vs float64 on {len(sample)} queries: ids equal {same:.4%}, max rel dist err {dist_err:.2e}")

    base_d = cp.asarray(base)
    norms = cp.einsum("ij,ij->i", base_d, base_d)

    def cupy_argpartition(qd):
        d = norms[None, :] - 2.0 * (qd @ base_d.T)
        part = cp.argpartition(d, args.k - 1, axis=1)[:, : args.k]
        vals = cp.take_along_axis(d, part, axis=1)
        return cp.take_along_axis(part, cp.argsort(vals, axis=1), axis=1)

    torch_fn = None
    try:
        import torch

        base_t = torch.as_tensor(base, device="cuda")
        norms_t = (base_t * base_t).sum(1)

        def torch_fn(qt, chunk=1024):
            d = norms_t[None, :] - 2.0 * (qt @ base_t.T)
            rows = d.shape[1] // chunk * chunk
            head = d[:, :rows].reshape(d.shape[0], -1, chunk)
            v, i = head.topk(args.k, dim=2, largest=False)
            i = i + torch.arange(0, rows, chunk, device="cuda")[None, :, None]
            v, i = v.reshape(d.shape[0], -1), i.reshape(d.shape[0], -1)
            if rows < d.shape[1]:
                v = torch.cat([v, d[:, rows:]], 1)
                i = torch.cat([i, torch.arange(rows, d.shape[1], device="cuda").expand(d.shape[0], -1)], 1)
            v2, j = v.topk(args.k, dim=1, largest=False)
            return i.gather(1, j)

        torch_sync = torch.cuda.synchronize
    except ImportError:
        torch_sync = None

    rows = []
    header = f"{'batch':>6} {'floor QPS':>11} {'ours QPS':>10} {'ours ms':>8} {'%floor':>7} {'cupy-argpart':>12} {'torch-topk':>11} {'ours/cupy':>9} {'ours/torch':>10}"
    print(header + "   gemm-only ms / ours-host ms")
    for q in batches:
        qh = queries[:q]
        qd = cp.asarray(qh)
        t_ours_dev = timed(lambda qd=qd: ours.search_device(qd, args.k), cp.cuda.Device().synchronize, args.repeats)
        t_ours_host = timed(lambda qh=qh: ours.search(qh, args.k), lambda: None, args.repeats)
        t_cupy = timed(lambda qd=qd: cupy_argpartition(qd), cp.cuda.Device().synchronize,
                       max(2, args.repeats // 3)) if q * args.n <= 1 << 31 else float("nan")
        t_torch = float("nan")
        if torch_fn is not None:
            qt = torch.as_tensor(qh, device="cuda")
            t_torch = timed(lambda qt=qt: torch_fn(qt), torch_sync, args.repeats)
        t_gemm = timed(lambda qd=qd: qd @ base_d.T, cp.cuda.Device().synchronize, args.repeats) \
            if q * args.n <= 1 << 31 else float("nan")
        floor = roofline_floor_s(args.n, args.dim, q, mem_bw, fp32_flops) if mem_bw and fp32_flops else float("nan")
        row = {"batch": q, "floor_qps": q / floor, "ours_qps": q / t_ours_dev, "ours_ms": t_ours_dev * 1e3,
               "ours_host_ms": t_ours_host * 1e3, "cupy_argpartition_qps": q / t_cupy,
               "torch_topk_qps": q / t_torch, "pct_of_floor": floor / t_ours_dev * 100,
               "ours_over_cupy": t_cupy / t_ours_dev, "ours_over_torch": t_torch / t_ours_dev,
               "gemm_only_ms": t_gemm * 1e3}
        rows.append(row)
        print(f"{q:>6} {row['floor_qps']:>11,.0f} {row['ours_qps']:>10,.0f} {row['ours_ms']:>8.3f} "
              f"{row['pct_of_floor']:>6.1f}% {row['cupy_argpartition_qps']:>12,.0f} {row['torch_topk_qps']:>11,.0f} "
              f"{row['ours_over_cupy']:>8.2f}x {row['ours_over_torch']:>9.2f}x   {t_gemm * 1e3:.3f} / {t_ours_host * 1e3:.3f}")

    if args.variants:
        variants(ours, queries, batches, args.k, args.repeats)

    # The same index served through the worker (what a GpuSearchActor does per micro-batch).
    worker = GpuSearchWorker("cupy")
    worker.build(base[: min(args.n, 200_000)])
    micro = worker.microbench(queries, batches, [args.k], repeats=5, warmup=2)
    med = {}
    for r in micro:
        med.setdefault(r["batch"], []).append(r["batch_ns"] / 1e6)
    per_batch = ", ".join(f"q={b}: {np.median(v):.3f} ms" for b, v in med.items())
    print(f"worker.microbench (N={worker.rows}, host in/out): {per_batch}")
    if args.open_loop_qps:
        rows_ol = open_loop(worker_for=base, queries=queries, k=args.k, qps=args.open_loop_qps,
                            duration_s=args.open_loop_s)
        print(f"open loop (LoadGenerator -> GpuSearchWorker(cupy), no Ray, N={args.n}): {rows_ol}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": ours.device_name(), "n": args.n, "dim": args.dim, "k": args.k,
                       "exact_ids_share": same, "rows": rows}, f, indent=2)
    print(f"rerun: python benchmarks/gpu_knn.py --n {args.n} --dim {args.dim} --k {args.k} --batches {args.batches}")


def variants(backend, queries: np.ndarray, batches: list[int], k: int, repeats: int) -> None:
    """ms per batch for each (threads per launch, loads in flight) setting; ids must not change."""
    import cupy as cp

    from perfray.backends import cupy_topk

    saved = (cupy_topk.TARGET_THREADS, cupy_topk.UNROLL)
    sync = cp.cuda.Device().synchronize
    reference = {q: backend.search_device(cp.asarray(queries[:q]), k)[0].get() for q in batches}
    print("variants (ms per batch; '!' = ids differ from the default):")
    print("  threads  unroll " + " ".join(f"{'q=' + str(q):>9}" for q in batches))
    for target in (1 << 16, 1 << 17, 1 << 18):
        for unroll in (1, 2, 4, 8):
            cupy_topk.TARGET_THREADS = target
            cupy_topk.UNROLL = unroll
            cells = []
            for q in batches:
                qd = cp.asarray(queries[:q])
                same = np.array_equal(backend.search_device(qd, k)[0].get(), reference[q])
                t = timed(lambda qd=qd: backend.search_device(qd, k), sync, repeats)
                cells.append(f"{t * 1e3:>8.3f}{' ' if same else '!'}")
            print(f"  {target:>7} {unroll:>6} " + " ".join(cells))
    cupy_topk.TARGET_THREADS, cupy_topk.UNROLL = saved


def open_loop(worker_for: np.ndarray, queries: np.ndarray, k: int, qps: float, duration_s: float,
              backend: str = "cupy") -> dict:
    """Open-loop micro-batched load through the same generator the LoadActors run."""
    import asyncio

    from perfray.load.generator import CellPlan, LoadGenerator, QueryPool
    from perfray.load.profiles import op_mix
    from perfray.load.schedules import PhaseRates
    from perfray.load.targets import ThreadEndpoint, make_router
    from perfray.sut.gpu_search import GpuSearchWorker

    worker = GpuSearchWorker(backend)
    worker.build(worker_for)
    router = make_router("replicated", [ThreadEndpoint(worker)])
    plan = CellPlan(cell=0, actor=0, n_actors=1, start_unix_ns=time.time_ns() + 300_000_000,
                    phases=[PhaseRates("warmup", 1.0, qps, qps, False),
                            PhaseRates("sustained", duration_s, qps, qps, True)],
                    arrival="poisson", ops=op_mix("simple", k, 1024), seed=1, batch_window_ns=1_000_000,
                    batch_max=512, max_in_flight=100_000, timeout_ns=2_000_000_000)
    gen = LoadGenerator(0)
    asyncio.run(gen.run_cell(plan, QueryPool(queries), router))
    table = gen.drain()
    phase = np.asarray(table.column("phase").to_pylist())
    status = np.asarray(table.column("status").to_pylist())
    keep = (phase == "sustained") & (status == "ok")
    lat = table.column("latency_ns").to_numpy(zero_copy_only=False)[keep] / 1e6
    batch = table.column("batch_size").to_numpy(zero_copy_only=False)[keep]
    return {"target_qps": qps, "ok": int(keep.sum()), "achieved_qps": round(keep.sum() / duration_s),
            "p50_ms": round(float(np.percentile(lat, 50)), 3), "p99_ms": round(float(np.percentile(lat, 99)), 3),
            "mean_batch": round(float(batch.mean()), 1), "not_ok": int(((phase == "sustained") & ~keep).sum())}


if __name__ == "__main__":
    main()
