"""benchmarks/cold.py runs and checks what it compares (every codec round trips); no timings."""

from benchmarks import cold


def test_bench_image_rows():
    name, data = next((n, d) for n, d in cold.images() if n.startswith("MR"))
    rows = cold.bench_image(name, data, runs=1)
    labels = [r[0] for r in rows]
    assert labels == [
        "hpacs cold (default)",
        "hpacs cold (default, 1 thread)",
        "hpacs cold (pixel zstd-3)",
        "zstd-3",
        "zstd-19",
        "JPEG-LS (CharLS)",
    ]
    ratios = dict((r[0], r[1]) for r in rows)
    assert ratios["hpacs cold (default)"] > ratios["zstd-19"] > 1
    assert cold.bench_store_read(data, runs=1).median > 0
