"""`python -m facesift`: the same command line as the `facesift` console script."""
import sys

from facesift.cli import main

sys.exit(main())
