"""Array backends behind one protocol (``base.ArrayBackend``), chosen by name or ``auto``."""

from __future__ import annotations

from perfray.errors import UnavailableError
from perfray.registry import Registry

BACKENDS = Registry("backend")
BACKENDS.register("numpy", "perfray.backends.numpy_backend:NumpyBackend")
BACKENDS.register("faiss", "perfray.backends.faiss_backend:FaissBackend")
BACKENDS.register("cupy", "perfray.backends.cupy_backend:CupyBackend")

# ``auto`` takes the first of these that would run on a GPU here, else the CPU reference. (FAISS on CPU
# is slower per query than numpy's BLAS path, so it is used on CPU only when asked for by name.)
AUTO_GPU_ORDER = ("cupy", "faiss")
CPU_FALLBACK = "numpy"


def resolve_backend_name(name: str) -> str:
    """The concrete backend ``name`` means in this process (``auto`` resolved)."""
    if name != "auto":
        return name
    for candidate in AUTO_GPU_ORDER:
        cls = BACKENDS.load(candidate)
        if cls.is_available() and cls.uses_gpu():
            return candidate
    return CPU_FALLBACK


def create_backend(name: str):
    """Instantiate backend ``name`` (or the best one for ``auto``); raise if it cannot run here."""
    concrete = resolve_backend_name(name)
    cls = BACKENDS.load(concrete)
    if not cls.is_available():
        hint = f"pip install 'perfray[{cls.extra}]'" if cls.extra else "check the installation"
        raise UnavailableError(f"backend {concrete!r} is not available on this worker; {hint} or use backend: auto")
    return cls()
