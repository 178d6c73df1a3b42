"""The table of tests/reference/README.md: max difference to the reference per family and input regime.

``SED_REFERENCE_REPORT=/tmp/r.jsonl python -m pytest tests/reference`` records every comparison
(:func:`tests.reference.common.assert_close`); ``python -m tests.reference.report /tmp/r.jsonl`` prints the
markdown table (the worst output of each family at each regime, as a fraction of the reference's range).
"""

from __future__ import annotations

import json
import re
import sys
from collections import defaultdict

REGIMES = ("1s", "3s", "10s", "15s", "25s", "batch", "mixed", "2x1012 frames", "other")


def regime(test: str, what: str) -> str:
    text = f"{test} {what}"
    if re.search(r"1012|quirk|exact_multiple", text):
        return "2x1012 frames"
    if "mixed" in text:
        return "mixed"
    if "batch" in text:
        return "batch"
    m = re.search(r"(?<![\d.])(1|3|10|15|25)(?:\.0)?s\b", text)
    return f"{m[1]}s" if m else "other"


def table(lines: list[str]) -> str:
    worst: dict[str, dict[str, float]] = defaultdict(dict)
    for line in lines:
        row = json.loads(line)
        family = row["test"].split("tests/reference/", 1)[-1].split("/", 1)[0]
        r = regime(row["test"], row["what"])
        worst[family][r] = max(worst[family].get(r, 0.0), row["diff"])
    used = [r for r in REGIMES if any(r in w for w in worst.values())]
    out = ["| reference | " + " | ".join(used) + " |", "|---" * (len(used) + 1) + "|"]
    for family in sorted(worst):
        out.append(
            f"| {family} | "
            + " | ".join(f"{worst[family][r]:.1e}" if r in worst[family] else "-" for r in used)
            + " |"
        )
    return "\n".join(out)


if __name__ == "__main__":
    with open(sys.argv[1], encoding="utf-8") as f:
        print(table([line for line in f if line.strip()]))
