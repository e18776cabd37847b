"""Both scanners against pydicom on every test file pydicom ships, whole, chunked and cut."""

from __future__ import annotations

import random

import pytest

from hpacs._ext import _headscan, headscan
from tests._ext.headscan_corpus import KNOWN_BAD, WANTED, Sample, pydicom_walk, samples

TWINS = [pytest.param(headscan, id="pure"), pytest.param(_headscan, id="compiled")]
SAMPLES = samples()
GOOD = [pytest.param(s, id=s.name) for s in SAMPLES if s.name not in KNOWN_BAD]
BAD = [pytest.param(s, id=s.name) for s in SAMPLES if s.name in KNOWN_BAD]
MAX_LEN = 1024


def scan(mod, s: Sample, data: bytes, sizes=None, max_len: int = MAX_LEN):
    """Feed data (whole, or in chunks of the given sizes, cycling); the values or the error."""
    sc = mod.HeaderScanner(WANTED, s.explicit_vr, s.little_endian, max_len)
    try:
        if sizes is None:
            sc.feed(data)
        else:
            i = k = 0
            while i < len(data):
                n = sizes[k % len(sizes)]
                sc.feed(data[i : i + n])
                i += n
                k += 1
        out = sc.finish()
        assert sc.bytes_seen == len(data)
        return out
    except headscan.ScanError as exc:
        return f"ScanError: {exc}"


def test_corpus_is_big_enough():
    assert len(SAMPLES) > 150
    assert {s.name for s in SAMPLES} >= set(KNOWN_BAD)


@pytest.mark.parametrize("s", GOOD)
def test_values_match_pydicom(s: Sample):
    expected, _ = pydicom_walk(s, MAX_LEN)
    rng = random.Random(s.name)
    ones = [1] if len(s.data) < 50_000 else [1, 4093]
    chunkings = [None, ones, [7, 1, 12, 3], [rng.randint(1, 5000) for _ in range(50)], [65536]]
    for mod in (headscan, _headscan):
        for sizes in chunkings:
            assert scan(mod, s, s.data, sizes) == expected, (mod.__name__, sizes)


@pytest.mark.parametrize("s", GOOD)
def test_max_value_length_skips_long_values(s: Sample):
    expected, _ = pydicom_walk(s, 10)
    assert scan(headscan, s, s.data, max_len=10) == expected
    assert scan(_headscan, s, s.data, [3], max_len=10) == expected


@pytest.mark.parametrize("s", BAD)
def test_known_bad_files_rejected(s: Sample):
    for mod in (headscan, _headscan):
        for sizes in (None, [1], [1000]):
            got = scan(mod, s, s.data, sizes)
            assert isinstance(got, str)
            assert KNOWN_BAD[s.name] in got


def _cuts(s: Sample, bounds: list[int]) -> list[int]:
    n = len(s.data)
    if n <= 3000:
        return list(range(n + 1))
    rng = random.Random(n)
    cuts = {0, n, n - 1, 1, 7, 8, 11, 12}
    for b in bounds:
        cuts.update(c for c in (b - 1, b, b + 1) if 0 <= c <= n)
    cuts.update(min(n, b + rng.randrange(1, 12)) for b in rng.sample(bounds, min(20, len(bounds))))
    cuts.update(rng.randrange(n) for _ in range(30))
    return sorted(cuts)


@pytest.mark.parametrize("s", GOOD)
def test_truncation(s: Sample):
    """Cut anywhere: finish() succeeds exactly at pydicom's top-level element boundaries."""
    _, bounds = pydicom_walk(s, MAX_LEN)
    assert bounds[-1] == len(s.data)
    boundary = set(bounds)
    for cut in _cuts(s, bounds):
        head = s.data[:cut]
        pure = scan(headscan, s, head)
        compiled = scan(_headscan, s, head)
        assert pure == compiled, cut
        assert scan(_headscan, s, head, [5, 3] if cut < 4096 else [4093, 1]) == compiled, cut
        if cut in boundary:
            assert isinstance(pure, dict), (cut, pure)
        else:
            assert isinstance(pure, str), cut
