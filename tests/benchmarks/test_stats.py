import pytest

from benchmarks.stats import fmt_ratio, fmt_summary, ratio, summarize


def test_summarize_odd_and_even():
    s = summarize([3, 1, 2])
    assert (s.n, s.median, s.min, s.max, s.mean) == (3, 2.0, 1.0, 3.0, 2.0)
    assert summarize([4, 1, 2, 3]).median == 2.5


def test_spread_is_relative_half_range():
    assert summarize([90, 100, 110]).spread == pytest.approx(0.1)
    assert summarize([0, 0]).spread == 0.0


def test_summarize_rejects_empty():
    with pytest.raises(ValueError):
        summarize([])


def test_formatting():
    assert fmt_summary(summarize([271, 286, 290])) == "286 (271-290)"
    assert fmt_summary(summarize([81.94]), 1) == "81.9"
    assert fmt_ratio(ratio(3.0, 2.0)) == "1.50x"
    assert ratio(1.0, 0.0) is None and ratio(None, 1.0) is None
    assert fmt_ratio(None) == "-"
