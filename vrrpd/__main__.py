"""Allow `python -m vrrpd`."""
from vrrpd.cli import main

raise SystemExit(main())
