"""Systems under test (``base.SystemUnderTest``), chosen by ``workload.system``; registered, with what each can
do, in ``perfray.systems_config.SYSTEMS`` (the config layer checks configs against it without importing them)."""

from __future__ import annotations

from perfray.systems_config import SYSTEMS  # noqa: F401 - the registry, as sut's callers know it
