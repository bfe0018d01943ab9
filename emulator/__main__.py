"""Run the emulator as a process: ``python -m emulator --port 0 --api-key KEY --list 3:Newsletter --time-scale 60``.

Prints exactly one line, ``emulator listening on http://127.0.0.1:PORT``, then serves until SIGTERM or SIGINT.
"""
from __future__ import annotations

import argparse
import signal
import sys
import threading

from .server import Emulator, tune_gc_for_millions


def parse_list(text: str) -> tuple[int, str]:
    list_id, sep, name = text.partition(":")
    if not sep or not list_id.strip().isdigit() or not name.strip():
        raise argparse.ArgumentTypeError(f"expected ID:NAME, got {text!r}")
    return int(list_id), name.strip()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m emulator", description="Local ActiveCampaign API v3 emulator")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--api-key", default="test-key")
    parser.add_argument("--list", dest="lists", action="append", type=parse_list, default=[],
                        metavar="ID:NAME", help="a list in the account (repeatable; default 1:Master Contact List)")
    parser.add_argument("--time-scale", type=float, default=1.0, help="divide every limit window and delay by this")
    parser.add_argument("--latency", type=float, default=0.0, help="real seconds added to every API request")
    parser.add_argument("--no-limits", action="store_true", help="do not enforce AC's rate limits")
    parser.add_argument("--import-delay", type=float, default=1.0, help="seconds (scaled) until a bulk import applies")
    parser.add_argument("--bulk-per-minute", type=int, default=100)
    parser.add_argument("--single-per-minute", type=int, default=20)
    parser.add_argument("--requests-per-second", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    emulator = Emulator(args.api_key, lists=dict(args.lists) or None, time_scale=args.time_scale,
                        latency=args.latency, enforce_limits=not args.no_limits,
                        bulk_per_minute=args.bulk_per_minute, single_per_minute=args.single_per_minute,
                        requests_per_second=args.requests_per_second, import_delay=args.import_delay,
                        seed=args.seed, port=args.port)
    tune_gc_for_millions()
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    with emulator.start():
        print(f"emulator listening on {emulator.hostname}", flush=True)
        stop.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
