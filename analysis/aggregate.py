"""Aggregate study results: `python analysis/aggregate.py results/<study>` (tables, figures, report)."""

import sys

from privstudy.analysis.aggregate import main

if __name__ == "__main__":
    sys.exit(main())
