"""``python -m compressai_transtic.evaluation.eval_model ...``: CompressAI's eval_model with our models registered.

Same arguments and output as ``python -m compressai.utils.eval_model``; it
registers this package's models first. Use it where the startup hook does not
run: interpreters started with ``-S`` (no ``.pth`` files), or environments
where the package is on ``PYTHONPATH`` rather than installed (then install it:
the models are found through entry points).
"""

from __future__ import annotations

import sys
from typing import List, Optional

from compressai.utils.eval_model.__main__ import main as eval_main

from ..registration import RegistrationError, register_models


def main(argv: Optional[List[str]] = None) -> None:
    """Register the models, then run ``compressai.utils.eval_model``'s main.

    Args:
        argv: command-line arguments (default: ``sys.argv[1:]``).
    """
    try:
        register_models()
    except RegistrationError as exc:  # the models that could be registered still are
        print(f"warning: {exc}", file=sys.stderr)
    eval_main(sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    main()
