import sys

from reprozoo.cli import main

sys.exit(main())
