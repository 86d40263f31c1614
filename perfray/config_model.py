"""The base of every config section's model: an unknown key is refused, a loaded config is frozen, and a number
must be finite (``.inf`` or ``.nan`` in YAML, ``--max-qps inf`` on a command line: a duration, rate or bound
that is not a number is refused at load, not found mid-run)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
