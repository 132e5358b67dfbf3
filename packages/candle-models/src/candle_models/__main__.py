"""`python -m candle_models ...` is the `candle` command."""

import sys

from .cli import main

sys.exit(main())
