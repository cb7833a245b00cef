"""Entry point for `python -m privstudy`."""

from privstudy.cli import main

raise SystemExit(main())
