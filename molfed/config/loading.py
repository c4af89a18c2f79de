"""Reading a config: YAML files, ``--set`` overrides, one-line errors naming the key, paths resolved against the
config file."""

from __future__ import annotations

import errno
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from molfed.config.base import _KEY, _MAX_ERRORS, _short
from molfed.config.schema import PartnerConfig, RunConfig
from molfed.errors import ConfigError


def apply_overrides(raw: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Apply ``key.sub=value`` overrides (values parsed as YAML) to a raw config mapping.

    Raises
    ------
    ConfigError
        If an override is not of the form ``key=value`` or walks through a non-container.
    """
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set {item!r}: expected key=value, e.g. federation.rounds=5")
        node: Any = raw
        parts = key.split(".")
        for part in parts[:-1]:
            node = _child(node, part, key)
        try:
            value = yaml.safe_load(text)
        except (yaml.YAMLError, RecursionError):
            value = text
        last = parts[-1]
        if isinstance(node, list):
            node[_index(node, last, key)] = value
        elif isinstance(node, dict):
            node[last] = value
        else:
            raise ConfigError(f"--set {key}: {'.'.join(parts[:-1])!r} is not a mapping or list")
    return raw


def _child(node: Any, part: str, key: str) -> Any:
    if isinstance(node, list):
        return node[_index(node, part, key)]
    if isinstance(node, dict):
        return node.setdefault(part, {})
    raise ConfigError(f"--set {key}: cannot descend into {part!r}")


def _index(node: list[Any], part: str, key: str) -> int:
    if not part.isdigit() or int(part) >= len(node):
        raise ConfigError(f"--set {key}: got index {part!r}, expected 0..{len(node) - 1}")
    return int(part)


def parse_config(raw: Any, *, source: str = "<config>", base_dir: Path | None = None) -> RunConfig:
    """Validate a raw mapping into a :class:`RunConfig`, resolving relative paths against ``base_dir``.

    Raises
    ------
    ConfigError
        One line per problem, each naming the config key, e.g. ``demo.yaml: train.epochs: ... (got -1)``.
    """
    if raw is None:
        raise ConfigError(f"{source}: the config is empty")
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a mapping at the top level, got {type(raw).__name__}")
    try:
        config = RunConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_format_errors(exc, source)) from None
    if base_dir is None:
        return config
    if config.mode == "sites":
        key = config.integrity.coordinator_key
        if key is None:
            return config
        integrity = config.integrity.model_copy(update={"coordinator_key": _resolve(key, base_dir)})
        return config.model_copy(update={"integrity": integrity})
    partners = [
        p.model_copy(
            update={
                "path": _resolve(p.path, base_dir, f"{source}: partners.{i}.path") if p.path is not None else None,
                "workspace": _resolve(config.workspace_for(p), base_dir, f"{source}: partners.{i}.workspace"),
            }
        )
        for i, p in enumerate(config.partners)
    ]
    _no_shared_workspace(partners, source)
    return config.model_copy(update={"partners": partners})


def _format_errors(exc: ValidationError, source: str) -> str:
    lines = []
    for err in exc.errors():
        loc = ".".join(p if isinstance(p, str) and _KEY.fullmatch(p) else _short(p) for p in err["loc"]) or "<root>"
        msg = err["msg"].removeprefix("Value error, ")
        got = "" if err["type"] in ("missing", "value_error") else f" (got {_short(err.get('input'))})"
        lines.append(f"{source}: {loc}: {msg}{got}")
    more = f"; ... and {len(lines) - _MAX_ERRORS} more" if len(lines) > _MAX_ERRORS else ""
    return "; ".join(lines[:_MAX_ERRORS]) + more


def _no_shared_workspace(partners: Sequence[PartnerConfig], source: str) -> None:
    """Partners' workspaces must differ: each rewrites its own ``rejects.csv`` there."""
    owner: dict[Path | None, str] = {}
    for i, partner in enumerate(partners):
        if partner.workspace in owner:
            raise ConfigError(
                f"{source}: partners.{i}.workspace: partners {owner[partner.workspace]!r} and {partner.name!r} "
                "share a workspace; give each partner its own"
            )
        owner[partner.workspace] = partner.name


def _resolve(path: Path, base_dir: Path, key: str = "path") -> Path:
    """``path`` made absolute against ``base_dir``, symbolic links resolved (a link loop is a ConfigError)."""
    path = path.expanduser()
    if path.is_absolute():
        return path
    try:
        return (base_dir / path).resolve()
    except (RuntimeError, OSError) as exc:  # Python 3.11 raises RuntimeError on a symbolic-link loop
        why = "symbolic-link loop" if isinstance(exc, RuntimeError) or exc.errno == errno.ELOOP else type(exc).__name__
        raise ConfigError(f"{key}: {base_dir / path}: {why}; point it at the file itself") from None


def load_config(path: str | Path, overrides: Sequence[str] = ()) -> RunConfig:
    """Load, override and validate a YAML config.

    Raises
    ------
    ConfigError
        If the file is missing, is not valid YAML (with line and column), or fails validation.
    """
    path = Path(path)
    raw = _read_yaml(path)
    if isinstance(raw, dict):
        raw = apply_overrides(raw, overrides)
    return parse_config(raw, source=str(path), base_dir=path.parent.resolve())


def _read_yaml(path: Path) -> Any:
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found" if not path.exists() else f"{path}: not a file")
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f", line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise ConfigError(f"{path}{where}: {problem}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({type(exc).__name__})") from None
    except RecursionError:  # PyYAML composes nested nodes recursively
        raise ConfigError(f"{path}: YAML nested too deeply") from None
