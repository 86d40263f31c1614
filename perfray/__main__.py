import sys

from perfray.cli import main

sys.exit(main())
