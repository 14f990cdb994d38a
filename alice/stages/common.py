"""What every stage module shares: the typed config's common fields, reading a config file into the stage's flags,
and turning parsed flags into the config.

A stage module (``alice.stages.<name>``) has ``SCRIPT`` (the paper-named script that is its front door),
``build_parser()`` (the script's flags), ``Config`` (a frozen dataclass whose fields are those flags' names),
``parse(argv) -> Config``, ``inputs(cfg)`` / ``outputs(cfg)`` (what it reads and writes) and ``run(cfg)``. The script,
``python -m alice.stages.<name>`` and the pipeline all go ``parse`` -> ``run``; a config file (``--config FILE``,
YAML or JSON: ``field: value``) sets the flags' values, flags given beside it override them.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

from .. import fresh
from ..errors import AliceError


class ConfigError(AliceError, ValueError):
    """A config file that cannot be read, or names a setting the stage does not have."""


@dataclass(frozen=True, kw_only=True)
class StageConfig:
    """The fields every stage's config has (``alice.cli.parser``'s flags)."""

    data: str
    model: str
    data_dir: str | None = None
    root: str | None = None
    overwrite: bool = False
    # the command line recorded with the outputs (alice.fresh: the pipeline skips a step whose outputs list its
    # command); set by ``parse`` from the flags, None when the config was made otherwise
    argv: tuple[str, ...] | None = None

    def recorded_argv(self) -> list[str] | None:
        return list(self.argv) if self.argv is not None else None


def read_file(path: str | Path) -> dict:
    """A config file's ``field: value`` mapping (YAML, of which JSON is a part)."""
    import yaml

    try:
        values = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except OSError as e:
        raise ConfigError(f"cannot read the config file {path}: {e.strerror or e}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path} is not YAML/JSON: {str(e).splitlines()[0]}") from None
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: expected a mapping of settings (field: value), got {type(values).__name__}")
    return values


def add_config_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", default=None, metavar="FILE",
                   help="a YAML/JSON file of this stage's settings (field: value, fields named as the flags with _); "
                        "flags given beside it override it")


def _actions(p: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return {a.dest: a for a in p._actions if a.dest not in ("help", "config")}


def dests(p: argparse.ArgumentParser) -> set[str]:
    """The names of ``p``'s flags (their config fields)."""
    return set(_actions(p))


_TRUE, _FALSE = ("true", "yes", "on", "1"), ("false", "no", "off", "0")


def convert(p: argparse.ArgumentParser, dest: str, value, source: str = "config"):
    """``value`` for the flag whose name is ``dest``, converted and checked as the flag does (type, choices; a switch
    takes true/false); a ``ConfigError`` in one line otherwise."""
    a = _actions(p).get(dest)
    if a is None:
        raise ConfigError(f"{source}: unknown setting {dest!r} (known: {', '.join(sorted(_actions(p)))})")
    if value is None:
        return None
    if a.nargs == 0:  # a switch: store_true / store_false / --x/--no-x
        if isinstance(value, str) and value.lower() in _TRUE + _FALSE:
            value = value.lower() in _TRUE
        if not isinstance(value, bool):
            raise ConfigError(f"{source}: expected true or false, got {value!r}")
        return value
    if a.type is not None:
        try:
            typed = a.type(str(value))
        except (argparse.ArgumentTypeError, ValueError, TypeError) as e:
            raise ConfigError(f"{source}: {e}") from None
        # a file's 1 for a float flag stays 1 (it prints as a command line writes it); a string becomes its value
        value = value if not isinstance(value, str) and typed == value else typed
    if a.choices is not None and value not in a.choices:
        raise ConfigError(f"{source}: {value!r} is not one of {', '.join(map(str, a.choices))}")
    return value


def apply_defaults(p: argparse.ArgumentParser, values: dict, source: str = "config") -> None:
    """``values`` (flag names -> values) become the parser's defaults, checked as the flags are (type, choices); a
    required flag given there is no longer required. A bad or unknown one is a usage error naming the known ones."""
    actions = _actions(p)
    for key, value in values.items():
        dest = str(key).replace("-", "_")
        try:
            value = convert(p, dest, value, f"{source}: {key}")
        except ConfigError as e:
            p.error(str(e))
        actions[dest].required = False
        actions[dest].default = value


def with_settings(p: argparse.ArgumentParser, flags: list[str], items) -> list[str]:
    """``flags`` (a command line of ``p``) with each ``(dest, value)`` of ``items`` set: the flag's earlier
    occurrences dropped, then the flag appended (a switch: its on / off spelling; None: left out, the default)."""
    out = list(flags)
    for dest, value in items:
        a = _actions(p)[dest]
        kept, skip = [], 0
        for f in out:
            if skip:
                skip -= 1
            elif f in a.option_strings:
                skip = 0 if a.nargs == 0 else 1
            else:
                kept.append(f)
        out = kept
        if isinstance(a, argparse.BooleanOptionalAction):
            if value is not None:
                out.append(a.option_strings[0] if value else a.option_strings[1])
        elif a.nargs == 0:
            if value == a.const:  # store_true (const True) / store_false (const False): the switch on
                out.append(a.option_strings[0])
        elif value is not None:
            out += [a.option_strings[0], str(value)]
    return out


def parse_args(p: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """``p.parse_args(argv)``, a ``--config FILE`` among them first setting the defaults."""
    pre = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    pre.add_argument("--config", default=None)
    known, _ = pre.parse_known_args(argv)
    if known.config:
        try:
            apply_defaults(p, read_file(known.config), known.config)
        except ConfigError as e:
            p.error(str(e))
    return p.parse_args(argv)


def config(cls, args: argparse.Namespace, argv: list[str] | None, **overrides):
    """``cls`` from parsed flags (each field the flag of its name), recording the command line."""
    kw = {f.name: getattr(args, f.name) for f in dataclasses.fields(cls) if f.init and hasattr(args, f.name)}
    kw["argv"] = tuple(fresh.command_line(argv))
    return cls(**dict(kw, **overrides))


def to_dict(cfg) -> dict:
    """A config as a file's mapping (``read_file`` / ``--config`` read it back); ``argv`` left out."""
    return {k: v for k, v in dataclasses.asdict(cfg).items() if k != "argv"}


def write_file(cfg, path: str | Path) -> Path:
    """Write ``cfg`` as a JSON config file (YAML reads it) for ``python -m alice.stages.<name> --config FILE``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(to_dict(cfg), indent=1) + "\n")
    return path
