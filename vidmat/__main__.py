import sys

from vidmat.cli import main

sys.exit(main())
