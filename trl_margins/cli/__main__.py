"""`python -m trl_margins.cli ...`: the `trl-margins` command (for `accelerate launch -m`)."""

import sys

from . import main

sys.exit(main())
