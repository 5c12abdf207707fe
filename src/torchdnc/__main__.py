"""``python -m torchdnc`` (and ``torchrun -m torchdnc``) is the ``torchdnc`` command."""

import sys

from torchdnc.cli import main

sys.exit(main())
