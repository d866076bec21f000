"""Run an example script unchanged, keeping a copy of the audio each ``stream()`` call yielded.

Usage: ``python -m tests.sdk.run_example EXAMPLE.py``; each call's PCM lands in
``$ORPHEUS_TEST_TEE_DIR/stream_<n>.pcm`` and its text in ``stream_<n>.txt`` (numbered
in call order), so a test can check what the example received, even when the
example itself keeps nothing.
"""

from __future__ import annotations

import itertools
import os
import runpy
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from orpheus_tts.sdk import OrpheusTTS

_calls = itertools.count()
_original_stream = OrpheusTTS.stream


async def _teed_stream(self: OrpheusTTS, *args: Any, **kwargs: Any) -> AsyncIterator[bytes]:
    stem = Path(os.environ["ORPHEUS_TEST_TEE_DIR"]) / f"stream_{next(_calls)}"
    text = kwargs["text"] if "text" in kwargs else args[0]
    stem.with_suffix(".txt").write_text(text, encoding="utf-8")
    with stem.with_suffix(".pcm").open("wb") as out:
        async for chunk in _original_stream(self, *args, **kwargs):
            out.write(chunk)
            yield chunk


def main() -> None:
    script = sys.argv[1]
    OrpheusTTS.stream = _teed_stream  # type: ignore[method-assign]
    sys.argv = sys.argv[1:]
    runpy.run_path(script, run_name="__main__")


if __name__ == "__main__":
    main()
