"""What the four Alice stages (``cluster``, ``uncertainty``, ``zeroshot``, ``final``) share: the config fields of
one Alice run (who teaches whom, single-turn or cascade, the sampling) and its ``alice_stages.Setting``."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

from .. import artifacts, cli, registry
from ..alice_stages import TEMPERATURE, TOP_P, Setting, stage_parser
from ..options import GenerationOptions
from ..paths import Layout
from . import common
from .cot import add_sampling_args


@dataclass(frozen=True, kw_only=True)
class AliceConfig(common.StageConfig, GenerationOptions):
    teacher: str
    student: str
    method: str = "singleturn"  # or cascade: the trained mid-level model samples
    midlevel: str | None = None
    temperature: float = TEMPERATURE
    top_p: float = TOP_P
    seed_exact: bool = False  # --seed-exact: the seed's behaviour where the project deliberately differs

    def setting(self) -> Setting:
        """The run's ``Setting`` (its files, models and records), its models checked."""
        for role in ("teacher", "student") + (("midlevel",) if self.method == "cascade" else ()):
            if getattr(self, role) is None:
                raise registry.RegistryError(f"--{role} is required here")
            registry.resolve_model(self.model, getattr(self, role))
        return Setting(data=self.data, model=self.model, teacher=self.teacher, student=self.student,
                       method=self.method, midlevel=self.midlevel, layout=Layout.default(self.root),
                       data_dir=self.data_dir, limit=self.limit, overwrite=self.overwrite,
                       argv=self.recorded_argv(), temperature=self.temperature, top_p=self.top_p,
                       seed_exact=self.seed_exact)

    @property
    def gen(self) -> GenerationOptions:
        return cli.generation_options(self)


def parser(stage: str, description: str) -> argparse.ArgumentParser:
    p = stage_parser(description, prog=artifacts.OURS.format(stage))
    add_sampling_args(p, TEMPERATURE, TOP_P)
    common.add_config_arg(p)
    return p


def parse(cls, p: argparse.ArgumentParser, argv: list[str] | None, check=None):
    """``cls`` (an ``AliceConfig``) from the flags; a missing or unknown model size is a usage error. ``check(p, args)``:
    the stage's own checks of its flags, before the models are looked up."""
    args = common.parse_args(p, argv)
    if check is not None:
        check(p, args)
    for role in ("teacher", "student") + (("midlevel",) if args.method == "cascade" else ()):
        cli.resolve(p, args, role)
    cli.check_weak_strong(p, args.model, args.teacher, args.student, args.midlevel if args.method == "cascade" else None)
    return common.config(cls, args, argv)


def paths(cfg: AliceConfig, *names: str) -> list[Path]:
    """``Setting`` paths of ``cfg``'s run by property name (models unchecked)."""
    s = Setting(data=cfg.data, model=cfg.model, teacher=cfg.teacher, student=cfg.student, method=cfg.method,
                midlevel=cfg.midlevel, layout=Layout.default(cfg.root))
    return [getattr(s, n) for n in names]
