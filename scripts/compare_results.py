"""Are two ``results.json`` files the same, record by record, apart from timing?

Records are compared in order, every field exactly (floats bit for bit), except the timing fields
(``fit_seconds``; more with ``--ignore``). Prints "identical" and exits 0, or names each differing record by its
setting (method, δ, seed, data) with the fields that differ and both values, and exits 1.

    python scripts/compare_results.py before/results.json after/results.json
    python scripts/compare_results.py a.json b.json --ignore fit_seconds probe_acc
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

TIMING_FIELDS = ("fit_seconds",)
LABEL_FIELDS = ("method", "delta", "seed", "data")


def label(record: dict) -> str:
    """A record's setting, e.g. ``method=infonce delta=0.5 seed=1 data=real``."""
    return " ".join(f"{name}={record.get(name)}" for name in LABEL_FIELDS if record.get(name) is not None)


def differences(before: list[dict], after: list[dict], ignore: set[str]) -> list[str]:
    """One line per difference: a record count that differs, or a record's differing fields with both values."""
    lines = []
    if len(before) != len(after):
        lines.append(f"{len(before)} records before, {len(after)} after (only the first {min(len(before), len(after))} compared)")
    for index, (old, new) in enumerate(zip(before, after)):
        fields = sorted((set(old) | set(new)) - ignore)
        changed = [f"{name}: {old.get(name, '<absent>')!r} → {new.get(name, '<absent>')!r}"
                   for name in fields if old.get(name, "<absent>") != new.get(name, "<absent>")]
        if changed:
            lines.append(f"record {index} ({label(old)}): " + "; ".join(changed))
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("before", type=Path, help="a results.json")
    parser.add_argument("after", type=Path, help="the results.json to compare it with")
    parser.add_argument("--ignore", nargs="*", default=[], help=f"fields to ignore besides {', '.join(TIMING_FIELDS)}")
    args = parser.parse_args(argv)
    before, after = (json.loads(path.read_text()) for path in (args.before, args.after))
    lines = differences(before, after, set(TIMING_FIELDS) | set(args.ignore))
    if not lines:
        print(f"identical: {len(before)} records (ignoring {', '.join(sorted(set(TIMING_FIELDS) | set(args.ignore)))})")
        return 0
    print(f"{args.before} and {args.after} differ:")
    print("\n".join(lines))
    return 1


if __name__ == "__main__":
    sys.exit(main())
