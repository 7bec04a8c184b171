"""CLI: ``python -m pipelines <name> [--flag value ...]``; flags and help come from the config dataclass.

Drains the same generator the UI streams, shows a progress bar on stderr, prints where the artifacts are.
"""
from __future__ import annotations

import argparse
import dataclasses
import importlib
import sys
import typing

from . import PIPELINES, UserInputError
from .events import ArtifactReady, Done, Log, Progress, run_to_completion

TOOLS = {"priors": ("pipelines.train.priors_train:main", "data and training of the embedded offline priors")}
"""Tool-only entries (no config, no UI tab): ``python -m pipelines <tool> ...`` calls ``"module:function"(argv)``."""


def build_parser(name: str, config_cls) -> argparse.ArgumentParser:
    spec = PIPELINES[name]
    epilog = "".join(f"subcommand: python -m pipelines {name} {c} --help. " for c in spec.commands) or None
    p = argparse.ArgumentParser(prog=f"python -m pipelines {name}", description=f"{spec.title}: {spec.summary}",
                                epilog=epilog)
    docs = config_cls.field_docs()
    hints = typing.get_type_hints(config_cls)
    presets = sorted(config_cls.PRESETS)
    if presets:
        p.add_argument("--preset", choices=presets, help="start from a preset; explicit flags override it")
    for f in dataclasses.fields(config_cls):
        typ = hints[f.name]
        flag = "--" + f.name.replace("_", "-")
        help_text = f"{docs.get(f.name, '')} (default: {f.default})".replace("%", "%%")  # argparse formats help
        kw: dict = {"dest": f.name, "default": argparse.SUPPRESS, "help": help_text}
        if typ is bool:
            kw["action"] = argparse.BooleanOptionalAction
        elif typing.get_origin(typ) is typing.Literal:
            kw["choices"] = list(typing.get_args(typ))
        elif typ in (int, float, str):
            kw["type"] = typ
        else:
            continue
        p.add_argument(flag, **kw)
    return p


def make_config(name: str, argv: list[str]):
    config_cls, run = PIPELINES[name].load()
    args = vars(build_parser(name, config_cls).parse_args(argv))
    preset = args.pop("preset", None)
    cfg = config_cls()
    if preset:
        cfg = cfg.with_preset(preset)
    return dataclasses.replace(cfg, **args), run


class ProgressBar:
    def __init__(self, stream=sys.stderr, width: int = 28):
        self.stream, self.width, self.live = stream, width, False

    def __call__(self, ev) -> None:
        if isinstance(ev, Progress):
            frac = ev.step / max(1, ev.total)
            bar = "#" * int(frac * self.width)
            losses = " ".join(f"{k}={v:.4g}" for k, v in list(ev.losses.items())[:4])
            stage = f"[{ev.stage}] " if ev.stage else ""
            self.stream.write(f"\r{stage}[{bar:<{self.width}}] {ev.step}/{ev.total} {losses}\033[K")
            self.live = True
        elif isinstance(ev, (Log, ArtifactReady)):
            self.newline()
            if isinstance(ev, Log):
                self.stream.write(f"{ev.level}: {ev.message}\n")
            else:
                self.stream.write(f"wrote {ev.artifact.kind}: {ev.artifact.path}\n")
        self.stream.flush()

    def newline(self) -> None:
        if self.live:
            self.stream.write("\n")
            self.live = False


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    names = ", ".join(PIPELINES)
    if argv and argv[0] in TOOLS:
        module, _, func = TOOLS[argv[0]][0].partition(":")
        return int(getattr(importlib.import_module(module), func or "main")(argv[1:]) or 0)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in PIPELINES:
        print("usage: python -m pipelines <name> [--help] [flags]\n\npipelines:")
        for key, spec in PIPELINES.items():
            print(f"  {key:<14} {spec.title}: {spec.summary}")
        for key, (_, summary) in TOOLS.items():
            print(f"  {key:<14} {summary}")
        if not argv:  # a usage error like any other: the list above, status 2
            print(f"\nerror: name a pipeline: one of {names}", file=sys.stderr)
            return 2
        if argv[0] not in ("-h", "--help"):
            print(f"\nerror: unknown pipeline {argv[0]!r}; choose one of: {names}", file=sys.stderr)
            return 2
        return 0
    name = argv.pop(0)
    if argv and argv[0] in PIPELINES[name].commands:  # e.g. "single_view data": the method's own tool
        module, _, func = PIPELINES[name].commands[argv[0]].partition(":")
        return int(getattr(importlib.import_module(module), func or "main")(argv[1:]) or 0)
    bar = ProgressBar()
    try:
        cfg, run = make_config(name, argv)
        done: Done = run_to_completion(run(cfg), on_event=bar)
    except UserInputError as e:
        bar.newline()
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        bar.newline()
        print("stopped", file=sys.stderr)
        return 130
    bar.newline()
    print(f"done in {done.seconds:.1f}s")
    for k, v in done.metrics.items():
        print(f"  {k}: {v:.4g}")
    for a in done.artifacts:
        print(f"  {a.kind:<10} {a.path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
