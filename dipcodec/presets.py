"""The encoder's effort levels, by name: torch-free, so that the command line and the evaluation can
check a preset without loading the fitting code. Their schedules are ``encoder.PRESETS``."""

from __future__ import annotations

from typing import Literal, get_args

__all__ = ["Preset", "PRESET_NAMES"]

Preset = Literal["fast", "default", "best"]
PRESET_NAMES: tuple[str, ...] = get_args(Preset)
