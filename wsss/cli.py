"""What every script shares: ``--config FILE [key=value ...]`` and the runner that turns a
known failure into one line and an exit status."""
from __future__ import annotations

import sys
from typing import Callable

from wsss.config import ConfigError, load_config
from wsss.fileio import DataError


def parse_args(argv: list[str] | None = None, description: str = "", extra_args=None):
    """``--config FILE [key=value ...]`` plus script-specific flags; returns (cfg, args).
    A config error prints one line and exits with status 2."""
    import argparse

    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="YAML config file")
    if extra_args:
        extra_args(parser)
    parser.add_argument("overrides", nargs="*", help="dotted overrides, e.g. train.lr=0.01 work_dir=/tmp/x")
    args = parser.parse_intermixed_args(argv)
    try:
        cfg = load_config(args.config, args.overrides)
    except ConfigError as e:
        print(f"config error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    return cfg, args


def one_line(msg: str) -> str:
    """The original message of an error re-raised from a DataLoader worker (which wraps it
    in a traceback), or the message itself."""
    if "Original Traceback" in msg:
        last = [ln for ln in msg.strip().splitlines() if ln.strip()][-1]
        return last.split(": ", 1)[1] if ": " in last and last.split(": ", 1)[0].endswith("Error") else last
    return msg.strip().splitlines()[0] if msg.strip() else msg


def run_script(fn: Callable[[], object]) -> None:
    """Run a script's main; known failures print one line and exit non-zero."""
    from wsss.engine.checkpoint import CheckpointError
    from wsss.engine.trainer import NonFiniteLossError
    from wsss.lock import WorkDirBusy, release_all
    from wsss.models.backbones import WeightsError

    try:
        fn()
    except ConfigError as e:
        print(f"config error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    except (DataError, WeightsError, CheckpointError, NonFiniteLossError, FileExistsError, WorkDirBusy) as e:
        print(f"error: {one_line(str(e))}", file=sys.stderr)
        raise SystemExit(1) from None
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        raise SystemExit(130) from None
    finally:
        from wsss.engine.distributed import cleanup_distributed

        cleanup_distributed()
        release_all()
