"""`python -m jaxseg.sweep FILE ...`: the sweep command line of `jaxseg.sweep.cli`."""

import sys

from jaxseg.sweep.cli import main

sys.exit(main())
