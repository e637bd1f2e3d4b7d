"""Regenerate docs/RESULTS.md and docs/figures/compare_*.png: every negative-guidance rule over
scales and seeds (same as ``python -m ccfg compare``; see ccfg/compare.py). Run from the repo root:

    python tools/compare.py            # default size, < ~40 min on 2 cores
    python tools/compare.py --quick    # a few minutes
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ccfg.compare import main  # noqa: E402

if __name__ == "__main__":
    # this script regenerates the committed report; `python -m ccfg compare` writes elsewhere
    sys.exit(main(["--out", "docs/RESULTS.md", "--figures", "docs/figures", *sys.argv[1:]]))
