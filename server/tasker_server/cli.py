"""The ``tasker`` command: ``tasker serve``, ``tasker migrate``, ``tasker config``."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence

from tasker_server.config import SETTINGS, ConfigError, load_settings, render_markdown

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tasker", description="Tasker workflow orchestration")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the gRPC server")
    serve.add_argument("--config", help="YAML config file (also TASKER_CONFIG)")
    for setting in SETTINGS:
        serve.add_argument(
            f"--{setting.name.replace('_', '-')}",
            dest=setting.name,
            default=None,
            help=f"{setting.doc} [env {setting.env}]",
        )

    migrate = sub.add_parser("migrate", help="apply database migrations and exit")
    migrate.add_argument("--config", help="YAML config file (also TASKER_CONFIG)")
    migrate.add_argument("--database-url", dest="database_url", default=None)

    sub.add_parser("config", help="print the configuration reference (Markdown)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "config":
        print(render_markdown())
        return 0
    overrides = {
        s.name: getattr(args, s.name) for s in SETTINGS if getattr(args, s.name, None) is not None
    }
    try:
        settings = load_settings(args.config, overrides=overrides)
    except ConfigError as exc:
        print(f"tasker: configuration error: {exc}", file=sys.stderr)
        return 2

    from tasker_server.app import migrate_only, serve

    if args.command == "migrate":
        return asyncio.run(migrate_only(settings))
    return asyncio.run(serve(settings))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
