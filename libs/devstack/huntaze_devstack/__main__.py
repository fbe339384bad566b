"""`python -m huntaze_devstack run | migrate`: the whole suite on one machine.

`run` starts the infrastructure the environment does not provide (see `stack.py`), applies every
migration, then runs every process of the suite under honcho until Ctrl-C or SIGTERM, and stops
the infrastructure it started. `migrate` only applies the migrations.
"""

from __future__ import annotations

import argparse
import signal
import sys
from types import FrameType

from honcho.manager import Manager

from huntaze_devstack.stack import LocalStack
from huntaze_devstack.suite import SUITE, Service


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def _print_summary(stack: LocalStack) -> None:
    rows = stack.summary()
    width = max(len(name) for name, _ in rows)
    print("Huntaze is starting:", flush=True)
    for name, value in rows:
        print(f"  {name.ljust(width)}  {value}", flush=True)
    print("Stop with Ctrl-C.", flush=True)


def run(suite: tuple[Service, ...] = SUITE) -> int:
    """Everything, in the foreground, until interrupted or until a process exits."""
    signal.signal(signal.SIGTERM, _interrupt)
    stack = LocalStack(suite=suite)
    try:
        with stack:
            schemas = stack.migrate()
            print(f"migrations applied: {', '.join(schemas) or 'none'}", flush=True)
            manager = Manager()
            if stack.mail_command is not None:
                manager.add_process("mail", stack.mail_command, env=stack.env)
            for service in suite:
                manager.add_process(service.name, service.command(), env=stack.env)
            _print_summary(stack)
            manager.loop()
            return manager.returncode or 0
    except KeyboardInterrupt:
        return 130


def migrate(suite: tuple[Service, ...] = SUITE) -> int:
    """Applies every service's migrations, starting (then stopping) PostgreSQL when needed."""
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        with LocalStack(with_nats=False, with_mail=False, suite=suite) as stack:
            schemas = stack.migrate()
            print(f"migrations applied: {', '.join(schemas) or 'none'}", flush=True)
    except KeyboardInterrupt:
        return 130
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m huntaze_devstack", description="Runs the Huntaze suite locally."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("run", help="start infrastructure, migrate, and run every process")
    commands.add_parser("migrate", help="apply every service's migrations")
    args = parser.parse_args(argv)
    if args.command == "run":
        return run()
    return migrate()


if __name__ == "__main__":
    sys.exit(main())
