"""Allow `python -m vrrpd`."""
from vrrpd.ops.cli import main

raise SystemExit(main())
