"""`python -m fastcnn ...` is the `fastcnn` command."""

import sys

from fastcnn.cli import main

sys.exit(main())
