"""``python -m gpt2np`` runs the same command as the ``gpt2np`` console script."""

import sys

from .cli import main

sys.exit(main())
