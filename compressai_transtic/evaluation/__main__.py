"""``python -m compressai_transtic.evaluation ARGS`` = ``compressai-transtic eval ARGS``."""

from __future__ import annotations

import sys
from typing import Optional, Sequence

from ..cli import main as cli_main  # the top-level command line: eval is one of its commands

__all__ = ["main"]


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the evaluator with ``argv`` (default: the command line)."""
    return cli_main(["eval", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
