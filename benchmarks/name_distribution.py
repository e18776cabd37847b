"""How many patients share a drawn patient's 3-letter family-name prefix: synthetic vs real.

``python -m benchmarks.name_distribution`` (the real side needs the ``Faker`` package, which
ships the 1000 most frequent US surnames with their 2010 Census frequencies; e.g.
``pip install --target /tmp/fk Faker`` and ``PYTHONPATH=/tmp/fk``).

The query benchmark's name-prefix shape draws a stored patient and queries the first three
letters of its family name + ``*``, so the expected match count is the population share of the
drawn patient's prefix, weighted by how often that prefix is drawn (size-biased). This prints
that share (median, mean, p99 over drawn patients) for ``benchmarks/fill.py``'s names and for the
real surname frequencies, and what it means in studies at the 1M-instance fill (20,374 studies).
Only the top 1000 real surnames are known here (about 40 % of the US population); assuming the
rarer ones spread over prefixes like the common ones gives the same shares, and since rare names
spread wider in truth, the real figures are an upper bound.
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict

from benchmarks import fill

STUDIES_AT_1M = 20374


def prefix_shares(weights: dict[str, float]) -> dict[str, float]:
    total = sum(weights.values())
    out: dict[str, float] = defaultdict(float)
    for name, w in weights.items():
        out[name.upper()[:3]] += w / total
    return out


def drawn(shares: dict[str, float]) -> dict[str, float]:
    """Median, mean and p99 of the prefix share seen by a size-biased draw."""
    ordered = sorted(shares.values())
    out: dict[str, float] = {"mean": sum(s * s for s in ordered)}
    for label, q in (("median", 0.5), ("p99", 0.99)):
        acc = 0.0
        for s in ordered:
            acc += s
            if acc >= q:
                out[label] = s
                break
    return out


def report(label: str, weights: dict[str, float]) -> str:
    shares = prefix_shares(weights)
    d = drawn(shares)
    cells = ", ".join(f"{k} {v * 100:.2f} % (~{v * STUDIES_AT_1M:.0f} studies)"
                      for k, v in d.items())
    return f"{label}: {len(weights)} surnames, {len(shares)} prefixes; drawn prefix share {cells}"


def main(argv: list[str] | None = None) -> int:
    argparse.ArgumentParser(description=__doc__.split("\n\n")[0]).parse_args(argv)
    # fill.py draws family names uniformly (its ~2 % Japanese patients left aside)
    print(report("benchmarks/fill.py", {n: 1.0 for n in fill.FAMILY}))
    try:
        from faker.providers.person.en_US import Provider
    except ImportError:
        print("real surnames: install Faker (see the module docstring) for that line")
        return 0
    print(report("US 2010 Census top-1000 surnames (Faker en_US)", dict(Provider.last_names)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
