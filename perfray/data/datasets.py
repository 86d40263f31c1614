"""Load a dataset spec into arrays: seeded synthetic clusters, ann-benchmarks HDF5, or ``.fvecs`` files."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from perfray.errors import UsageError

# Bump when the synthetic generator changes, so cached ground truth is not reused across versions.
SYNTHETIC_VERSION = 1


@dataclass(frozen=True)
class Dataset:
    """Base vectors and queries (float32, C-contiguous) plus a content fingerprint."""

    name: str
    base: np.ndarray
    queries: np.ndarray
    fingerprint: str

    @property
    def n(self) -> int:
        return int(self.base.shape[0])

    @property
    def dim(self) -> int:
        return int(self.base.shape[1])


def load_dataset(spec) -> Dataset:
    """Materialise a ``SyntheticDataset`` or ``FileDataset`` spec."""
    if spec.kind == "synthetic":
        return synthetic(spec)
    return from_file(spec)


def synthetic(spec) -> Dataset:
    seeds = np.random.SeedSequence(spec.seed).spawn(3)
    centers = np.random.default_rng(seeds[0]).standard_normal((spec.clusters, spec.dim), dtype=np.float32)
    base = _around(centers, spec.n, spec.spread, np.random.default_rng(seeds[1]))
    queries = _around(centers, spec.n_queries, spec.spread, np.random.default_rng(seeds[2]))
    key = json.dumps({"v": SYNTHETIC_VERSION, **spec.model_dump(mode="json")}, sort_keys=True)
    name = f"synthetic-{spec.n}x{spec.dim}-c{spec.clusters}-s{spec.seed}"
    return Dataset(name, base, queries, hashlib.sha256(key.encode()).hexdigest())


def _around(centers: np.ndarray, n: int, spread: float, rng: np.random.Generator) -> np.ndarray:
    out = rng.standard_normal((n, centers.shape[1]), dtype=np.float32)
    out *= np.float32(spread)
    out += centers[rng.integers(0, centers.shape[0], size=n)]
    return out


def from_file(spec) -> Dataset:
    path = Path(spec.path)
    fmt = spec.format if spec.format != "auto" else _guess_format(path)
    if fmt == "hdf5":
        base, queries = _read_hdf5(path)
    else:
        if spec.queries_path is None:
            raise UsageError(f"dataset.queries_path: required for .fvecs base file {path}")
        base, queries = read_fvecs(path), read_fvecs(Path(spec.queries_path))
    if spec.limit:
        base = base[: spec.limit]
    if spec.n_queries:
        queries = queries[: spec.n_queries]
    if queries.shape[1] != base.shape[1]:
        raise UsageError(f"dataset: queries have dim {queries.shape[1]}, base vectors have dim {base.shape[1]}")
    for what, vectors, file in (("base vector", base, path), ("query", queries, spec.queries_path or path)):
        if vectors.shape[0] == 0:
            raise UsageError(f"{file}: no {what} rows")
        bad = ~np.isfinite(vectors).all(axis=1)
        if bad.any():
            raise UsageError(f"{file}: {what} {int(np.flatnonzero(bad)[0])} has a NaN or infinite value "
                             f"({int(bad.sum())} such rows); distances to it are undefined")
    digest = hashlib.sha256(json.dumps(spec.model_dump(mode="json"), sort_keys=True, default=str).encode())
    for file in (path, spec.queries_path):
        if file is not None:
            digest.update(_file_digest(Path(file)).encode())
    return Dataset(path.stem, np.ascontiguousarray(base), np.ascontiguousarray(queries), digest.hexdigest())


HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


def check_dataset_files(specs) -> None:
    """Each file dataset's files start as their format says, checked from their first bytes before anything starts
    (Ray, a run directory): random bytes named ``.hdf5`` are one line, not a Ray start and a traceback."""
    for spec in specs:
        if getattr(spec, "kind", None) != "file":
            continue
        path = Path(spec.path)
        fmt = spec.format if spec.format != "auto" else _guess_format(path)
        files = [(path, fmt)] + ([(Path(spec.queries_path), "fvecs")] if fmt == "fvecs" and spec.queries_path else [])
        for file, kind in files:
            why = _hdf5_header_fault(file) if kind == "hdf5" else _fvecs_header_fault(file)
            if why:
                raise UsageError(f"{file}: not {'an HDF5' if kind == 'hdf5' else 'a .fvecs'} file ({why})")


def _hdf5_header_fault(path: Path) -> str | None:
    """HDF5's signature stands at byte 0, or after a user block of 512, 1024, 2048 … bytes."""
    size = path.stat().st_size
    with path.open("rb") as f:
        offset = 0
        while offset + 8 <= size:
            f.seek(offset)
            if f.read(8) == HDF5_SIGNATURE:
                return None
            offset = 512 if offset == 0 else offset * 2
    return "no HDF5 signature at its start"


def _fvecs_header_fault(path: Path) -> str | None:
    """Each vector is an int32 dim then dim float32: the first dim must be positive and divide the size."""
    size = path.stat().st_size
    if size < 4:
        return f"{size} bytes"
    dim = int(np.fromfile(path, dtype=np.int32, count=1)[0])
    if dim <= 0 or dim > 1_000_000 or size % (4 * (dim + 1)):
        return f"first dim {dim}, {size} bytes"
    return None


def _guess_format(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix in (".hdf5", ".h5"):
        return "hdf5"
    if suffix == ".fvecs":
        return "fvecs"
    raise UsageError(f"dataset.path: cannot tell the format of {path}; set dataset.format to hdf5 or fvecs")


def read_fvecs(path: Path) -> np.ndarray:
    """Read a ``.fvecs`` file (each vector: int32 dim, then dim float32)."""
    if Path(path).stat().st_size == 0:
        raise UsageError(f"{path}: empty .fvecs file")
    if (why := _fvecs_header_fault(Path(path))) is not None:
        raise UsageError(f"{path}: not a .fvecs file ({why})")
    raw = np.fromfile(path, dtype=np.int32)
    dim = int(raw[0])
    rows = raw.reshape(-1, dim + 1)
    if not (rows[:, 0] == dim).all():
        raise UsageError(f"{path}: .fvecs rows have different dimensions")
    return np.ascontiguousarray(rows[:, 1:]).view(np.float32)


def write_fvecs(path: Path, vectors: np.ndarray) -> None:
    """Write float32 vectors as ``.fvecs``."""
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    dims = np.full((vectors.shape[0], 1), vectors.shape[1], dtype=np.int32)
    np.hstack([dims, vectors.view(np.int32)]).tofile(path)


def _read_hdf5(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        import h5py
    except ImportError:
        raise UsageError("dataset: reading HDF5 needs h5py (pip install 'perfray[hdf5]')") from None
    try:
        with h5py.File(path, "r") as f:
            if "train" not in f or "test" not in f:
                raise UsageError(f"{path}: expected ann-benchmarks datasets 'train' and 'test'")
            metric = f.attrs.get("distance", "euclidean")
            metric = metric.decode() if isinstance(metric, bytes) else str(metric)
            base, queries = (_hdf5_vectors(path, f, name) for name in ("train", "test"))
    except OSError as err:
        raise UsageError(f"{path}: cannot read as HDF5 ({err})") from None
    if metric == "angular":
        # Cosine ranking equals L2 ranking on unit vectors.
        base = _normalise(base)
        queries = _normalise(queries)
    elif metric not in ("euclidean", "l2"):
        raise UsageError(f"{path}: distance {metric!r} is not supported (euclidean or angular)")
    return base, queries


def _hdf5_vectors(path: Path, f, name: str) -> np.ndarray:
    """Dataset ``name`` of an open HDF5 file as float32 rows: a 2-D numeric array, else one line naming it."""
    import h5py

    node = f[name]
    if not isinstance(node, h5py.Dataset):
        raise UsageError(f"{path}: '{name}' is a group; expected a 2-D array of vectors")
    if node.dtype.kind not in "fiu":
        raise UsageError(f"{path}: '{name}' holds {node.dtype}; expected numbers (a 2-D array of vectors)")
    if node.ndim != 2 or node.shape[1] == 0:
        raise UsageError(f"{path}: '{name}' has shape {node.shape}; expected a 2-D array (vectors x dimensions)")
    return np.asarray(node, dtype=np.float32)


def _normalise(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norms == 0, 1, norms)


def _file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()
