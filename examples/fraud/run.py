"""One command for the whole fraud example:

    .venv/bin/python -m examples.fraud.run                  # 3M transactions, a few minutes
    .venv/bin/python -m examples.fraud.run --rows 50000     # the CI size, well under a minute

It writes a feature repo with generated data to ``--out`` (default ``fraud-demo``),
then applies, backfills, builds training datasets, trains two models (with and
without the windowed features) and saves the first, materializes, starts
``featurestore serve`` (feature logging on) and the scoring app (``serve.py``) on
free loopback ports, scores incoming transactions through ``POST /score``, stops
both, and runs the skew audit over what the feature server logged.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from examples.fraud.pipeline import run_all


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=3_000_000, help="transactions to generate")
    parser.add_argument("--out", type=Path, default=Path("fraud-demo"), help="repo directory")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)

    result = run_all(args.out, rows=args.rows, seed=args.seed)
    print()
    print(f"transactions: {result.rows:,}, fraud rate {result.fraud_rate:.2%}")
    print(f"held-out AUC with windowed features: {result.auc:.4f}")
    print(f"held-out AUC without (baseline):     {result.baseline_auc:.4f}")
    print(f"model saved to {result.model_path}; scored through POST /score:")
    print(result.scored)
    print(f"skew audit: {result.audit}")
    return 0 if result.audit["passed"] else 5


if __name__ == "__main__":
    sys.exit(main())
