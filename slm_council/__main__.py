"""``python -m slm_council``: what editors spawn when they are given an interpreter rather
than the ``council`` script (``python -m slm_council lsp``)."""

from __future__ import annotations

import sys

from slm_council.main import main

sys.exit(main())
