"""`python -m providers.loopback`."""

import sys

from providers.loopback.cli import main

sys.exit(main())
