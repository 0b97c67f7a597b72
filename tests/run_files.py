"""Run files for the tests: TOML text from ``{section: {key: value}}`` (the flat tables of run files)."""

from __future__ import annotations

import json
from pathlib import Path


def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return repr(value)


def toml_text(sections: dict) -> str:
    """The TOML text of ``{section: {key: value}}``."""
    lines = [f"{name} = {_toml_value(value)}" for name, value in sections.items() if not isinstance(value, dict)]
    for name, table in sections.items():
        if not isinstance(table, dict):
            continue
        lines.append(f"[{name}]")
        lines += [f"{key} = {_toml_value(value)}" for key, value in table.items()]
        lines.append("")
    return "\n".join(lines)


def write_toml(path: Path, sections: dict) -> Path:
    """A TOML file of ``{section: {key: value}}``."""
    path.write_text(toml_text(sections), encoding="utf-8")
    return path


