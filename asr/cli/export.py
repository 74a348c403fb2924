"""``asr-export RUN_DIR OUT.pt [--tag step-00001000]``: a run's DeepSpeed checkpoint (any ZeRO stage) as
one fp32 checkpoint that loads without DeepSpeed (``asr.checkpoint.load``)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from asr.checkpoint import CheckpointError, export


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="asr-export", description=__doc__)
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--tag", help="a checkpoint folder name; default: the latest (see RUN_DIR/checkpoints)")
    args = parser.parse_args(argv)
    try:
        path = export(args.run_dir, args.out, args.tag)
    except (CheckpointError, FileNotFoundError, ValueError) as e:
        print(f"asr-export: error: {e}", file=sys.stderr)
        return 1
    print(f"exported -> {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
