"""Regenerate docs/RESULTS.md and docs/figures/compare_*.png: every negative-guidance rule over
scales, paired over shared noise with bootstrap intervals (same as ``python -m ccfg compare``; see ccfg/compare.py). Run from the repo root:

    python tools/compare.py            # default size, about 40 min on 2 idle cores
    python tools/compare.py --quick    # about 15 min
    python tools/compare.py --render   # rewrite the report from docs/RESULTS.json
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ccfg.compare import main  # noqa: E402

if __name__ == "__main__":
    # this script regenerates the committed report; `python -m ccfg compare` writes elsewhere
    sys.exit(main(["--out", "docs/RESULTS.md", "--figures", "docs/figures", *sys.argv[1:]]))
