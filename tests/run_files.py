"""Run files for the tests: TOML files from ``{section: {key: value}}`` (the flat tables of run files)."""

from __future__ import annotations

from pathlib import Path

from sensitivity.estimation.runs.config import toml_text

__all__ = ["toml_text", "write_toml"]


def write_toml(path: Path, sections: dict) -> Path:
    """A TOML file of ``{section: {key: value}}`` (:func:`~sensitivity.estimation.runs.config.toml_text`)."""
    path.write_text(toml_text(sections), encoding="utf-8")
    return path
