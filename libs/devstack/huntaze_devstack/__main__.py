"""`python -m huntaze_devstack run | migrate | roles`: the whole suite on one machine.

`run` starts the infrastructure the environment does not provide (see `stack.py`), applies every
migration, then runs every process of the suite under honcho until Ctrl-C or SIGTERM, and stops
the infrastructure it started. `migrate` only applies the migrations. `roles` creates each
service's database role on a server of the operator's (see `roles.py`), once per database.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from types import FrameType

from honcho.manager import Manager

from huntaze_devstack.onlyfans_demo import connect_command, simulator_command
from huntaze_devstack.roles import new_passwords, provision_roles, service_roles
from huntaze_devstack.stack import LocalStack
from huntaze_devstack.suite import SUITE, Service
from huntaze_devstack.web import build as build_console


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
        # Before the suite starts: the gateway serves the console it finds built.
        console = build_console()
        with stack:
            stack.env.setdefault("HUNTAZE_GATEWAY_CONSOLE_DIR", str(console))
            schemas = stack.migrate()
            print(f"migrations applied: {', '.join(schemas) or 'none'}", flush=True)
            manager = Manager()
            if stack.mail_command is not None:
                manager.add_process("mail", stack.mail_command, env=stack.env)
            for service in suite:
                manager.add_process(service.name, service.command(), env=stack.service_env(service))
            if stack.simulator_started:
                manager.add_process(
                    "simulator", simulator_command(stack.home, stack.simulator_port), env=stack.env
                )
                manager.add_process(
                    "demo", connect_command(stack.gateway_url, stack.maildir), env=stack.env
                )
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


def roles(admin_url: str, suite: tuple[Service, ...] = SUITE) -> int:
    """Creates each service's role with a new password (rotating it when the role exists) and
    prints the database URL each service's Secret must hold."""
    wanted = service_roles(suite)
    urls = asyncio.run(provision_roles(admin_url, wanted, passwords=new_passwords(wanted)))
    for service, url in urls.items():
        print(f"{service}: HUNTAZE_DATABASE_URL={url}", flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m huntaze_devstack", description="Runs the Huntaze suite locally."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("run", help="start infrastructure, migrate, and run every process")
    commands.add_parser("migrate", help="apply every service's migrations")
    provision = commands.add_parser(
        "roles", help="create every service's database role and print its database URL"
    )
    provision.add_argument(
        "--admin-url",
        default=os.environ.get("HUNTAZE_DATABASE_URL"),
        help="an administrator's URL of the database (default: HUNTAZE_DATABASE_URL)",
    )
    args = parser.parse_args(argv)
    if args.command == "run":
        return run()
    if args.command == "roles":
        if not args.admin_url:
            parser.error("roles needs --admin-url or HUNTAZE_DATABASE_URL")
        return roles(args.admin_url)
    return migrate()


if __name__ == "__main__":
    sys.exit(main())
