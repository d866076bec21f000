"""RoutingSettings: validated at construction, derived values."""

from __future__ import annotations

import pytest

from orpheus_tts.routing import RoutingSettings


def test_defaults_are_sane() -> None:
    settings = RoutingSettings()
    assert settings.hedge_delay_s == pytest.approx(0.4)
    assert settings.read_timeout_for(None) == settings.read_timeout_s
    assert settings.read_timeout_for(200.0) == pytest.approx(200.0 + settings.deadline_grace_s)


@pytest.mark.parametrize("hedge", [None, 0, 0.0])
def test_hedging_off(hedge: float | None) -> None:
    assert RoutingSettings(hedge_ttfb_ms=hedge).hedge_delay_s is None


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("hedge_ttfb_ms", -1.0),
        ("hedge_ttfb_ms", float("nan")),
        ("hedge_budget_ratio", 1.5),
        ("max_attempts", 0),
        ("breaker_failure_threshold", 0),
        ("breaker_cooldown_s", 0.0),
        ("connect_timeout_s", float("inf")),
        ("stream_path", "v1/tts/stream"),
        ("retry_budget_reserve", -1),
    ],
)
def test_rejects_bad_values(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=field):
        RoutingSettings(**{field: value})  # type: ignore[arg-type]
