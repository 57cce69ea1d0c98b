"""``python -m compressai_transtic`` runs the ``compressai-transtic`` command."""

import sys

from .cli import main

sys.exit(main())
