"""``python -m kefer``: the ``kefer`` command."""
import sys

from .cli import main

sys.exit(main())
