"""Scanner throughput, pure vs compiled (a script, not a test):

    .venv/bin/python -m tests._ext.bench_headscan
"""

from __future__ import annotations

import time

from hpacs._ext import _headscan, headscan
from tests._ext.headscan_corpus import WANTED, samples
from tests._ext.test_headscan_unit import el

CHUNK = 64 * 1024


def ct_like() -> bytes:
    """A 512x512 16-bit CT-like explicit VR LE data set (~110 header elements + 512 KiB)."""
    parts = [el(0x00080005, "CS", b"ISO_IR 100")]
    parts.append(el(0x00080016, "UI", b"1.2.840.10008.5.1.4.1.1.2\0"))
    parts += [el(0x00090000 | k * 2 + 0x1000, "LO", b"private value %03d " % k) for k in range(100)]
    parts += [el(0x00100010, "PN", b"Doe^John"), el(0x0020000D, "UI", b"1.2.3.4.5.6")]
    parts += [el(0x00280010, "US", b"\0\2"), el(0x00280011, "US", b"\0\2")]
    parts.append(el(0x7FE00010, "OW", bytes(512 * 512 * 2)))
    return b"".join(parts)


def timeit(fn, min_time=1.0) -> float:
    n, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < min_time:
        fn()
        n += 1
    return elapsed / n


def main() -> None:
    data = ct_like()
    chunks = [data[i : i + CHUNK] for i in range(0, len(data), CHUNK)]
    for mod in (headscan, _headscan):
        def run(mod=mod):
            sc = mod.HeaderScanner(WANTED, True, True)
            for c in chunks:
                sc.feed(c)
            return sc.finish()

        t = timeit(run)
        print(f"{mod.__name__:24s} CT 512x512x16 in 64 KiB chunks: {t * 1e6:8.1f} us/dataset "
              f"{len(data) / t / 1e9:8.2f} GB/s")
    corpus = [s for s in samples() if len(s.data) < 2_000_000]
    for mod in (headscan, _headscan):
        def corpus_run(mod=mod):
            for s in corpus:
                sc = mod.HeaderScanner(WANTED, s.explicit_vr, s.little_endian)
                try:
                    sc.feed(s.data)
                    sc.finish()
                except headscan.ScanError:
                    pass

        t = timeit(corpus_run)
        print(f"{mod.__name__:24s} pydicom corpus, whole file: {t / len(corpus) * 1e6:8.1f} "
              f"us/file ({len(corpus)} files)")
    # header only: the elements before Pixel Data, as the first C-STORE fragment would carry
    head = data[: len(data) - 512 * 512 * 2 - 12]
    for mod in (headscan, _headscan):
        def head_run(mod=mod):
            sc = mod.HeaderScanner(WANTED, True, True)
            sc.feed(head)
            return sc.finish()

        t = timeit(head_run)
        print(f"{mod.__name__:24s} header only ({len(head)} B, 106 elements): {t * 1e6:8.2f} us")


if __name__ == "__main__":
    main()
