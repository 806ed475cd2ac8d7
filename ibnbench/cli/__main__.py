"""``python -m ibnbench.cli`` (torchrun launches ranks this way)."""
import sys

from ibnbench.cli import main

sys.exit(main())
