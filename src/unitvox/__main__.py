"""Run: python -m unitvox --help"""

from unitvox.cli import main

raise SystemExit(main())
