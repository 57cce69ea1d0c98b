"""``python -m compressai_transtic.training``: same as ``compressai-transtic train``.

Under ``torchrun`` use the module form: ``torchrun --nproc_per_node 2 -m
compressai_transtic.training --task det ...``.
"""

import sys
import warnings

from .. import _JIT_SCRIPT_WARNING
from .cli import main

if __name__ == "__main__":
    warnings.filterwarnings("ignore", message=_JIT_SCRIPT_WARNING, category=FutureWarning)
    sys.exit(main())
