"""``python -m nni_bap.cli ...``: the ``bap`` command line."""
import sys

from .main import main

sys.exit(main())
