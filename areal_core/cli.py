"""The ``areal`` command.

    areal plugins [--json]                         installed components by kind, failed plugins, name conflicts
    areal config show [--config run.yaml] [k=v..]  the resolved config, as YAML
    areal config docs [-o PATH] [--installed]      write the config reference
    areal plugin new NAME [--kind K] [--dir D]     scaffold a plugin providing one component of kind K
    areal serve --backend NAME --model PATH [k=v..]  exec one inference server
    areal train | sft | dpo | rm ...   /   areal plot RUN_DIR ...   the trainers' own command lines

An :class:`~areal_core.errors.ArealError` prints its message on stderr and exits with status 2,
without a traceback; ``--debug`` (anywhere on the line) or ``AREAL_DEBUG=1`` adds tracebacks.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import shlex
import sys
import traceback
from pathlib import Path

from areal_core import __version__
from areal_core.errors import ArealError
from areal_core.logging import LEVELS, configure_logging, env_flag, get_logger

# commands whose argument parsing belongs to another module: (module, function(argv) -> int | None)
DELEGATED = {
    "train": ("areal_core.trainer.entry", "train_main", "run RL training: areal train --config run.yaml [overrides]"),
    "plot": ("areal_core.trainer.plot", "main", "plot a run's metrics: areal plot RUN_DIR"),
    "sft": ("areal_core.trainer.offline", "sft_main", "supervised fine-tuning: areal sft --config sft.yaml [overrides]"),
    "dpo": ("areal_core.trainer.offline", "dpo_main", "preference optimisation: areal dpo --config dpo.yaml [overrides]"),
    "rm": ("areal_core.trainer.offline", "rm_main", "reward modelling: areal rm --config rm.yaml [overrides]"),
}
GLOBAL_FLAGS_WITH_VALUE = ("--log-level",)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv or env_flag("AREAL_DEBUG")
    argv = [a for a in argv if a != "--debug"]
    if debug:
        os.environ["AREAL_DEBUG"] = "1"  # processes started from here inherit it
    try:
        return _run(argv)
    except ArealError as exc:
        if debug:
            traceback.print_exc()
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except SystemExit as exc:  # argparse's own exits (--help, usage errors)
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    except Exception as exc:  # a bug: say so in one line unless debugging
        if debug:
            raise
        print(f"error: internal error: {type(exc).__name__}: {exc}\n(run with --debug for the traceback)", file=sys.stderr)
        return 1


def _run(argv: list[str]) -> int:
    parser = build_parser()
    at = _command_position(argv)
    if at is not None and argv[at] in DELEGATED:
        _setup_logging(parser.parse_args(argv[:at]))
        return _delegate(argv[at], argv[at + 1:])
    args = parser.parse_args(argv)
    _setup_logging(args)
    if not getattr(args, "handler", None):
        parser.print_help()
        return 2
    return args.handler(args) or 0


def build_parser() -> argparse.ArgumentParser:
    from areal_core.scaffold import DEFAULT_KIND, KIND_TEMPLATES

    parser = argparse.ArgumentParser(prog="areal", description="Asynchronous RL for LLMs, built from plugins.")
    parser.add_argument("--version", action="version", version=f"areal-core {__version__}")
    parser.add_argument("--log-level", choices=LEVELS, help="log level (default: AREAL_LOG_LEVEL or info)")
    parser.add_argument("--log-json", action="store_true", default=None, help="JSON log lines (default: AREAL_LOG_JSON)")
    parser.add_argument("--debug", action="store_true", help="show tracebacks for errors (or AREAL_DEBUG=1)")
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")

    p = commands.add_parser("plugins", help="list installed components by kind, and plugins that failed to load")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(handler=cmd_plugins)

    config = commands.add_parser("config", help="show the resolved config, or write the config reference")
    config_commands = config.add_subparsers(title="config commands", metavar="SUBCOMMAND")
    show = config_commands.add_parser("show", help="print the resolved run config as YAML")
    show.add_argument("--config", type=Path, help="YAML run config")
    show.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="dotted overrides, e.g. actor.optimizer.lr=1e-5")
    show.set_defaults(handler=cmd_config_show)
    docs = config_commands.add_parser("docs", help="write the config reference (markdown) generated from the models")
    docs.add_argument("-o", "--output", default="docs/config-reference.md", help="file to write, - for stdout")
    docs.add_argument("--installed", action="store_true", help="include every installed plugin (default: areal-core only)")
    docs.set_defaults(handler=cmd_config_docs)
    config.set_defaults(handler=lambda args: _print_help(config))

    plugin = commands.add_parser("plugin", help="plugin development helpers")
    plugin_commands = plugin.add_subparsers(title="plugin commands", metavar="SUBCOMMAND")
    new = plugin_commands.add_parser("new", help="create plugins/areal-NAME: one component of a kind, its contract test, README")
    new.add_argument("name", help="plugin name, e.g. my-reward (distribution areal-my-reward)")
    new.add_argument("--kind", default=DEFAULT_KIND, choices=KIND_TEMPLATES,
                     help=f"component kind the plugin provides (default: {DEFAULT_KIND})")
    new.add_argument("--dir", default="plugins", help="parent directory (default: plugins)")
    new.set_defaults(handler=cmd_plugin_new)
    plugin.set_defaults(handler=lambda args: _print_help(plugin))

    serve = commands.add_parser("serve", help="start one inference server of a backend (replaces this process)")
    serve.add_argument("--backend", required=True, help="inference backend name (see `areal plugins`)")
    serve.add_argument("--model", required=True, help="model directory to serve")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=30000, help="port to listen on (default 30000)")
    serve.add_argument("--api-key", default=None,
                       help="bearer token every request must carry; handed to the server in AREAL_API_KEY (not argv). "
                            "Default: $AREAL_API_KEY; prefer that variable on a shared node (argv is visible in ps)")
    serve.add_argument("--dry-run", action="store_true", help="print the server command instead of running it")
    serve.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="backend config overrides")
    serve.set_defaults(handler=cmd_serve)

    for name, (_, _, help_text) in DELEGATED.items():
        commands.add_parser(name, help=help_text, add_help=False)
    return parser


# -- commands ---------------------------------------------------------------------------------


def _print_help(parser: argparse.ArgumentParser) -> int:
    """A command group run without its subcommand: print its help, exit status 2."""
    parser.print_help()
    return 2


def cmd_plugins(args) -> int:
    from areal_core.registry import KINDS, get_registry

    registry = get_registry()
    if args.json:
        print(json.dumps({
            "components": [
                {"kind": c.kind, "name": c.name, "summary": c.summary, "distribution": c.distribution, "version": c.version}
                for kind in KINDS for c in registry.by_kind(kind)
            ],
            "failures": [{"entry_point": f.entry_point, "distribution": f.distribution, "error": f.error} for f in registry.failures],
            "conflicts": [
                {"kind": c.kind, "name": c.name, "distributions": [r.distribution for r in c.components], "error": c.message()}
                for c in registry.conflicts.values()
            ],
        }, indent=2))
        return 0

    from rich.table import Table

    console = _console()
    table = Table(title="areal components", title_justify="left", show_lines=False)
    for column in ("kind", "name", "summary", "distribution", "version"):
        table.add_column(column, overflow="fold")
    for kind in KINDS.values():
        rows = [(c.name, _escape(c.summary), _escape(c.distribution), _escape(c.version)) for c in registry.by_kind(kind.name)]
        rows += [(n, "[red]unusable: registered twice (see below)[/red]", _escape(", ".join(r.distribution for r in c.components)), "")
                 for (k, n), c in registry.conflicts.items() if k == kind.name]
        for i, (name, *rest) in enumerate(sorted(rows)):
            table.add_row(kind.label if i == 0 else "", _escape(name), *rest)
        if not rows:
            table.add_row(kind.label, "[dim]-[/dim]", "[dim]none installed[/dim]", "", "")
        table.add_section()
    console.print(table)
    if registry.failures:
        failed = Table(title="plugins that failed to load", title_justify="left", title_style="bold red")
        for column in ("entry point", "distribution", "error"):
            failed.add_column(column, overflow="fold")
        for f in registry.failures:
            failed.add_row(_escape(f.entry_point), _escape(f.distribution), f"[red]{_escape(f.error)}[/red]")
        console.print(failed)
    if registry.conflicts:
        clashes = Table(title="names registered twice (a run that uses one fails; the rest work)", title_justify="left",
                        title_style="bold red")
        for column in ("kind", "name", "registered by", "fix"):
            clashes.add_column(column, overflow="fold")
        for c in registry.conflicts.values():
            clashes.add_row(KINDS[c.kind].label, _escape(c.name), _escape(", ".join(r.origin for r in c.components)),
                            f"[red]{_escape(c.fix)}[/red]")
        console.print(clashes)
    return 0


def cmd_config_show(args) -> int:
    from areal_core.config.loader import load_config

    print(load_config(config_path=args.config, overrides=args.overrides).to_yaml(), end="")
    return 0


def cmd_config_docs(args) -> int:
    from areal_core.config.docgen import render_config_reference
    from areal_core.registry import build_registry

    text = render_config_reference(build_registry(entry_points=args.installed))
    if args.output == "-":
        print(text, end="")
    else:
        out = Path(args.output)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text, encoding="utf-8")
        print(f"wrote {out}")
    return 0


def cmd_plugin_new(args) -> int:
    from areal_core.scaffold import KIND_TEMPLATES, new_plugin

    dest = new_plugin(args.name, args.dir, kind=args.kind)
    print(f"created {dest}\nnext: pip install -e {dest}[test] && pytest {dest}/tests")
    if not KIND_TEMPLATES[args.kind].working:
        print(f"the {args.kind} is a skeleton: its contract test fails until you implement the methods that raise NotImplementedError")
    return 0


def cmd_serve(args) -> int:
    from areal_core.config.loader import load_config
    from areal_core.registry import get_registry

    registry = get_registry()
    model = registry.get("inference_backend", args.backend).load_config_model()
    cfg = load_config(model=model, overrides=[f"name={args.backend}", *args.overrides], env_prefix=None, registry=registry).run
    backend = registry.create("inference_backend", args.backend, cfg)
    command = [str(a) for a in backend.server_command(args.model, args.host, args.port)]
    if args.dry_run:
        print(shlex.join(command))
        return 0
    if args.api_key:
        from areal_core.auth import API_KEY_ENV

        os.environ[API_KEY_ENV] = args.api_key
    get_logger(__name__).info("starting inference server", backend=args.backend, command=shlex.join(command))
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execvp(command[0], command)
    except OSError as exc:
        raise ArealError(f"inference backend {args.backend!r}: cannot start {command[0]!r}: {exc.strerror or exc}") from None
    return 0  # not reached: execvp replaced this process


def _delegate(command: str, argv: list[str]) -> int:
    module_name, function, _ = DELEGATED[command]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and (exc.name == module_name or module_name.startswith(exc.name + ".")):
            raise ArealError(f"`areal {command}` is not available: module {module_name} is not installed") from None
        raise
    result = getattr(module, function)(argv)
    return int(result or 0)


# -- helpers ----------------------------------------------------------------------------------


def _command_position(argv: list[str]) -> int | None:
    """Index of the first token that is not a global option (or a global option's value)."""
    i = 0
    while i < len(argv):
        token = argv[i]
        if token in GLOBAL_FLAGS_WITH_VALUE:
            i += 2
        elif token.startswith("-"):
            i += 1
        else:
            return i
    return None


def _setup_logging(args) -> None:
    configure_logging(level=getattr(args, "log_level", None), json_logs=getattr(args, "log_json", None))


def _console():
    from rich.console import Console

    return Console() if sys.stdout.isatty() else Console(width=160, color_system=None)


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)


if __name__ == "__main__":
    sys.exit(main())
