"""`python -m dnsd` runs the command line."""

from dnsd.cli import main

raise SystemExit(main())
