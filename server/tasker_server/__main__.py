import sys

from tasker_server.cli import main

sys.exit(main())
