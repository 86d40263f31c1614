"""The media catalogue the hybrid stack serves: items (the dataset's vectors), genres, people, users, a
similarity graph and per-user genre policies. Seeded, so every store gets the same catalogue."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

import numpy as np

from perfray.data.datasets import Dataset

# Bump when generation changes: stores holding an older catalogue are reloaded.
CATALOGUE_VERSION = 1


@dataclass(frozen=True)
class Catalogue:
    """Items are the dataset's base rows (id = row); everything else is derived from ``spec.seed``."""

    dataset: Dataset
    item_genre: np.ndarray  # (n_items,) int32
    item_popularity: np.ndarray  # (n_items,) float32 in (0, 1]
    item_people: np.ndarray  # (n_items, people_per_item) int32
    similar: np.ndarray  # (n_items, similar_per_item) int64: SIMILAR_TO edges, same genre
    policy_weight: np.ndarray  # (n_users, n_genres) float32; 0 = the user may not see the genre
    n_people: int
    fingerprint: str

    @property
    def n_items(self) -> int:
        return self.dataset.n

    @property
    def n_users(self) -> int:
        return int(self.policy_weight.shape[0])

    @property
    def n_genres(self) -> int:
        return int(self.policy_weight.shape[1])

    def user_of(self, query_rows: np.ndarray) -> np.ndarray:
        """The user a query is asked for: fixed per query row, so stores and ground truth agree."""
        return (np.asarray(query_rows, dtype=np.int64) * 7919) % self.n_users


def build_catalogue(dataset: Dataset, spec) -> Catalogue:
    """Derive a catalogue from ``dataset`` and a ``CatalogueSpec``."""
    rng = np.random.default_rng(np.random.SeedSequence([spec.seed, 0xCA7]))
    n = dataset.n
    genre = rng.integers(0, spec.genres, size=n).astype(np.int32)
    popularity = (1.0 - rng.random(n)).astype(np.float32)
    people = rng.integers(0, spec.people, size=(n, spec.people_per_item)).astype(np.int32)
    similar = _same_genre_edges(genre, spec.similar_per_item, rng)
    weight = rng.uniform(0.5, 2.0, size=(spec.users, spec.genres)).astype(np.float32)
    weight[rng.random((spec.users, spec.genres)) < spec.blocked_share] = 0.0
    key = json.dumps({"v": CATALOGUE_VERSION, "dataset": dataset.fingerprint, **spec.model_dump(mode="json")},
                     sort_keys=True)
    return Catalogue(dataset, genre, popularity, people, similar, weight, spec.people,
                     hashlib.sha256(key.encode()).hexdigest()[:32])


def _same_genre_edges(genre: np.ndarray, per_item: int, rng: np.random.Generator) -> np.ndarray:
    """``per_item`` distinct-from-self neighbours per item, drawn from items of the same genre."""
    out = np.empty((genre.size, per_item), dtype=np.int64)
    for g in np.unique(genre):
        members = np.flatnonzero(genre == g)
        if members.size == 1:
            out[members] = members[0]
            continue
        picks = rng.integers(0, members.size - 1, size=(members.size, per_item))
        own = np.arange(members.size)[:, None]
        picks += picks >= own  # skip self
        out[members] = members[picks]
    return out


def expand(catalogue: Catalogue, seeds: np.ndarray, hops: int) -> np.ndarray:
    """Items reachable from ``seeds`` over 1..``hops`` SIMILAR_TO edges (what the graph store must return)."""
    frontier = np.unique(np.asarray(seeds, dtype=np.int64))
    seen: set[int] = set()
    for _ in range(hops):
        frontier = np.unique(catalogue.similar[frontier].ravel())
        seen.update(frontier.tolist())
    return np.array(sorted(seen), dtype=np.int64)


def rank(catalogue: Catalogue, user: int, candidates: np.ndarray, k: int) -> np.ndarray:
    """The policy ranking every store implements: popularity × the user's genre weight, blocked genres out,
    ties by item id. The reference the stores' answers are checked against."""
    candidates = np.unique(np.asarray(candidates, dtype=np.int64))
    score = catalogue.item_popularity[candidates] * catalogue.policy_weight[user, catalogue.item_genre[candidates]]
    keep = score > 0
    candidates, score = candidates[keep], score[keep]
    order = np.lexsort((candidates, -score))[:k]
    return candidates[order]
