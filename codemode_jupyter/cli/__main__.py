"""`python -m codemode_jupyter.cli`: the `codemode-jupyter` command."""

import sys

from codemode_jupyter.cli.main import main

sys.exit(main())
