"""``python -m workbench``: the command line, so that ``torchrun --nproc_per_node 2 -m workbench train ...`` and
``accelerate launch -m workbench train ...`` start it in every process."""

import sys

from workbench.cli import main

sys.exit(main())
