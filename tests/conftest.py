"""Fixtures every test shares."""

from __future__ import annotations

import pytest

from metarl.fewshot.download import CACHE_ENV


@pytest.fixture(autouse=True)
def _no_user_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    """Unset ``$METARL_CACHE``: a developer's cache must neither supply missing data nor move a test's cache."""
    monkeypatch.delenv(CACHE_ENV, raising=False)
