"""Scaling model: the Universal Scalability Law fitted to throughput vs GPUs, and a GPU's kernel on paper.

USL: X(N) = λN / (1 + σ(N−1) + κN(N−1)); σ is contention, κ coherency; throughput peaks at
N* = sqrt((1−σ)/κ). Intervals come from a residual bootstrap. With fewer than three GPU counts, or a poor fit,
the model says so instead of extrapolating.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np

MIN_POINTS = 3
MIN_R2 = 0.8
BOOTSTRAP = 300


def usl(n, lam, sigma, kappa):
    n = np.asarray(n, dtype=np.float64)
    return lam * n / (1 + sigma * (n - 1) + kappa * n * (n - 1))


def _fit(n: np.ndarray, x: np.ndarray):
    from scipy.optimize import OptimizeWarning, curve_fit

    lam0 = float(x[np.argmin(n)] / n.min())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", OptimizeWarning)  # the covariance is not used; intervals are bootstrapped
        params, _ = curve_fit(usl, n, x, p0=(lam0, 0.05, 0.001), bounds=([0, 0, 0], [np.inf, 1, 1]),
                              maxfev=20_000)
    return params


def _peak(sigma: float, kappa: float) -> float:
    return math.sqrt((1 - sigma) / kappa) if kappa > 0 else math.inf


SIZING_MAX_N = 10_000  # the most GPUs a sizing answer considers


def gpus_for(rate: float, params, boot: np.ndarray) -> dict:
    """The fewest GPUs whose fitted capacity reaches ``rate``, with a 95% interval over the bootstrap fits (inf:
    never, within ``SIZING_MAX_N``: the curve peaks below the rate)."""
    grid = np.arange(1, SIZING_MAX_N + 1, dtype=np.float64)

    def first(lam, sigma, kappa) -> float:
        hit = np.flatnonzero(usl(grid, lam, sigma, kappa) >= rate)
        return float(grid[hit[0]]) if hit.size else math.inf

    samples = np.sort([first(*b) for b in boot])
    lo, hi = samples[int(0.025 * (samples.size - 1))], samples[int(math.ceil(0.975 * (samples.size - 1)))]
    lam, sigma, kappa = params
    peak = min(_peak(sigma, kappa), SIZING_MAX_N)
    return {"rate": float(rate), "n": first(lam, sigma, kappa), "ci": [float(lo), float(hi)],
            "peak_qps": float(usl(peak, lam, sigma, kappa)), "unreachable_share": float(np.isinf(samples).mean())}


def fit_usl(n_gpus, qps, predict_at: int = 100, seed: int = 0, rate: float | None = None) -> dict:
    """Fit and bootstrap; ``ok`` False with a ``reason`` when the data cannot support a fit. With ``rate``: also
    the GPUs needed for it (``sizing``, from the fit and each bootstrap fit)."""
    n = np.asarray(n_gpus, dtype=np.float64)
    x = np.asarray(qps, dtype=np.float64)
    keep = np.isfinite(x) & (x > 0)
    n, x = n[keep], x[keep]
    if np.unique(n).size < MIN_POINTS:
        return {"ok": False, "reason": f"too few points: throughput at {np.unique(n).size} distinct GPU counts, "
                                       f"the USL needs at least {MIN_POINTS}"}
    try:
        lam, sigma, kappa = _fit(n, x)
    except (RuntimeError, ValueError) as err:
        return {"ok": False, "reason": f"the fit did not converge ({err})"}
    fitted = usl(n, lam, sigma, kappa)
    ss_res = float(((x - fitted) ** 2).sum())
    ss_tot = float(((x - x.mean()) ** 2).sum())
    r2 = 1 - ss_res / ss_tot if ss_tot > 0 else (1.0 if ss_res == 0 else 0.0)
    if r2 < MIN_R2:
        return {"ok": False, "reason": f"too noisy: the best USL fit explains only R² = {r2:.2f} of the variation",
                "r2": r2}
    rng = np.random.default_rng(seed)
    residuals = x - fitted
    boot = []
    for _ in range(BOOTSTRAP):
        try:
            boot.append(_fit(n, fitted + rng.choice(residuals, residuals.size, replace=True)))
        except (RuntimeError, ValueError):
            continue
    boot = np.array(boot) if boot else np.array([[lam, sigma, kappa]])
    peaks = np.array([_peak(s, k) for _, s, k in boot])
    at = usl(predict_at, boot[:, 0], boot[:, 1], boot[:, 2])

    def ci(values):
        finite = values[np.isfinite(values)]
        return [float(v) for v in np.percentile(finite, [2.5, 97.5])] if finite.size else [math.inf, math.inf]

    out = {"ok": True, "lambda": float(lam), "sigma": float(sigma), "kappa": float(kappa), "r2": r2,
           "sigma_ci": ci(boot[:, 1]), "kappa_ci": ci(boot[:, 2]), "peak_n": _peak(sigma, kappa),
           "peak_n_ci": ci(peaks), "predict_at": predict_at,
           "predicted_qps": float(usl(predict_at, lam, sigma, kappa)), "predicted_qps_ci": ci(at)}
    if rate is not None:
        out["sizing"] = gpus_for(rate, (lam, sigma, kappa), boot)
    return out


@dataclass(frozen=True)
class GpuSpec:
    """What a GPU can do on paper."""

    name: str
    mem_bw_bytes_s: float
    fp32_flops: float
    fp16_flops: float


T4 = GpuSpec("NVIDIA T4", 320e9, 8.1e12, 65e12)


def paper_seconds(gpu: GpuSpec, n: int, dim: int, batch: int, fp16: bool = False) -> float:
    """One exhaustive search of ``batch`` queries on paper: read the index once or do the GEMM, whichever is
    slower. The kernel's bound only: ``perfray.analysis.gpu_model`` adds what a request costs around it."""
    bytes_per = 2 if fp16 else 4
    flops = gpu.fp16_flops if fp16 else gpu.fp32_flops
    return max(n * dim * bytes_per / gpu.mem_bw_bytes_s, 2.0 * n * dim * batch / flops)
