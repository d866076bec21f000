"""Fixtures for the Orpheus engine tests: tiny random-weight models, built once per session."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.engines.orpheus.make_tiny_models import SNAC_24KHZ, TINY_SNAC_WIDTHS, build_all


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(LM directory with tokenizer, SNAC directory), random weights, real vocabulary and layout."""
    return build_all(tmp_path_factory.mktemp("orpheus-tiny"))


def tiny_snac(noise: bool = True, seed: int = 0, full: bool = False):  # type: ignore[no-untyped-def]
    """An in-memory SNAC of the 24 kHz layout with random weights."""
    import torch
    from snac import SNAC

    torch.manual_seed(seed)
    config = dict(SNAC_24KHZ) if full else {**SNAC_24KHZ, **TINY_SNAC_WIDTHS}
    config["noise"] = noise
    return SNAC(**config).eval()
