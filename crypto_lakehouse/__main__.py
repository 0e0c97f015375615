import sys

from crypto_lakehouse.cli import main

sys.exit(main())
