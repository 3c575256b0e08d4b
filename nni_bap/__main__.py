"""``python -m nni_bap ...`` (and ``torchrun ... -m nni_bap prune ...``): the ``bap`` command line."""
import sys

from .cli.main import main

sys.exit(main())
