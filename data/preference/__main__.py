"""``python -m data.preference``: tokenize preference pair files (see data/README.md)."""

import sys

from data.preference.pairs import main

sys.exit(main())
