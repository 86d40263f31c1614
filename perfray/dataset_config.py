"""What a cell searches: its vectors (synthetic, or read from a file) and an optional filter on them. Kept apart
from ``perfray.config`` (which uses them, and exports these names too) so each stays small."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, model_validator

from perfray.config_model import Strict


class SyntheticDataset(Strict):
    """Seeded Gaussian clusters; queries come from the same distribution."""

    kind: Literal["synthetic"] = Field(
        "synthetic", description="synthetic: Gaussian clusters generated from seed (no file)")
    n: int = Field(20_000, gt=0, description="base vectors (the index's rows)")
    dim: int = Field(64, gt=0, description="dimensions of each vector")
    clusters: int = Field(32, gt=0, description="Gaussian clusters the vectors are drawn around")
    spread: float = Field(
        0.35, gt=0, description="each cluster's standard deviation, relative to the spread of the cluster "
                                "centres")
    n_queries: int = Field(
        1_000, gt=0, description="query vectors in the pool requests draw from (exact ground truth is "
                                 "computed for each)")
    seed: int = Field(0, description="random seed: the same seed gives the same vectors")


class FileDataset(Strict):
    """An ann-benchmarks HDF5 file (train/test) or ``.fvecs`` base (+ ``queries_path``)."""

    kind: Literal["file"] = Field(description="file: vectors read from path")
    path: Path = Field(description="an ann-benchmarks HDF5 file (train, test, neighbors) or an fvecs base")
    format: Literal["auto", "hdf5", "fvecs"] = Field(
        "auto", description="auto (from the extension), hdf5 (ann-benchmarks: train/test/neighbors) or "
                            "fvecs")
    queries_path: Path | None = Field(
        None, description="fvecs queries (an fvecs base has none); ground truth is computed exactly")
    n_queries: int | None = Field(None, gt=0, description="use only the first N queries (default: all)")
    limit: int | None = Field(None, gt=0, description="use only the first N base vectors")


Dataset = Annotated[SyntheticDataset | FileDataset, Field(discriminator="kind")]


class FilterSpec(Strict):
    """Filtered search (``perfray.data.filters``): each query may return only the items whose seeded integer
    attribute lies in its own window of ``selectivity × n`` values (exactly that share of the items passes), or,
    with ``field: genre``, the items of the genre label whose share is ``selectivity``."""

    selectivity: float = Field(gt=0, le=1, description="share of the items a query may return, e.g. 0.01")
    field: Literal["attr", "genre"] = Field("attr", description="the filtered attribute: attr, a seeded integer per "
                                            "item (a range), or genre, a label (selectivity: one of its shares)")

    @model_validator(mode="after")
    def _genre_share(self) -> FilterSpec:
        from perfray.data.filters import genre_of_selectivity

        if self.field == "genre":
            genre_of_selectivity(self.selectivity)
        return self
