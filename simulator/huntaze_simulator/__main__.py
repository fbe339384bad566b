"""`python -m huntaze_simulator serve --port 8765 [--demo] [--snapshot FILE]`: the simulator
under uvicorn. With `--demo` it starts with a generated creator and keeps its fans active; with
`--snapshot` the state is loaded from, and saved to, that JSON file (a restart keeps it)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import uvicorn

from huntaze_simulator.app import create_app
from huntaze_simulator.config import SimulatorConfig
from huntaze_simulator.demo import DemoShape, populate
from huntaze_simulator.platform import Clock, Platform


def build_platform(
    *, config: SimulatorConfig, demo: bool, fans: int, snapshot: Path | None
) -> Platform:
    clock = Clock()
    if snapshot is not None and snapshot.exists():
        return Platform.load(config=config, clock=clock, snapshot_path=snapshot)
    platform = Platform.fresh(config=config, clock=clock, snapshot_path=snapshot)
    if demo:
        populate(platform, DemoShape(fans=fans))
    platform.save()
    return platform


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m huntaze_simulator", description="A local OnlyFans platform simulator."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="serve the simulated platform over HTTP")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8765)
    serve.add_argument("--demo", action="store_true", help="a generated creator and live fans")
    serve.add_argument("--fans", type=int, default=DemoShape.fans, help="demo fans to generate")
    serve.add_argument("--seed", type=int, default=1)
    serve.add_argument("--snapshot", type=Path, help="JSON file to load from and save to")
    serve.add_argument("--config", type=Path, help="JSON file of SimulatorConfig fields")
    args = parser.parse_args(argv)
    settings = json.loads(args.config.read_text()) if args.config else {}
    config = SimulatorConfig.model_validate({"seed": args.seed, **settings})
    platform = build_platform(config=config, demo=args.demo, fans=args.fans, snapshot=args.snapshot)
    creator = platform.data.creator
    print(
        f"simulator on http://{args.host}:{args.port}  creator {creator.email} / "
        f"{creator.password}  fans {len(platform.data.fans)}",
        flush=True,
    )
    uvicorn.run(
        create_app(platform, demo_activity=args.demo),
        host=args.host,
        port=args.port,
        log_level="warning",
        lifespan="on",
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
