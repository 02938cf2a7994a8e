import sys

from roomcast.cli import main

sys.exit(main())
