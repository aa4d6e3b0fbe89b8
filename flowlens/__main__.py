"""``python -m flowlens ...`` runs the ``flowlens`` command."""

import sys

from flowlens.cli.main import main

sys.exit(main())
