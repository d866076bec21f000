"""``orpheus_tts.sdk.__all__`` lists every public name, and every listed name exists."""

from __future__ import annotations

import orpheus_tts.sdk
import orpheus_tts.sdk.exceptions


def test_all_is_complete_and_exact() -> None:
    public = {name for name in dir(orpheus_tts.sdk) if not name.startswith("_")}
    submodules = {"client", "events", "exceptions", "realtime"}
    assert set(orpheus_tts.sdk.__all__) == public - submodules
    for name in orpheus_tts.sdk.__all__:
        assert getattr(orpheus_tts.sdk, name) is not None


def test_every_exception_is_exported() -> None:
    module = orpheus_tts.sdk.exceptions
    classes = {n for n, v in vars(module).items() if isinstance(v, type) and issubclass(v, Exception)}
    ours = {n for n in classes if issubclass(getattr(module, n), orpheus_tts.sdk.OrpheusError)}
    assert ours <= set(orpheus_tts.sdk.__all__)
    assert ours == set(module.__all__)
