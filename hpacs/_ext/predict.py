"""Lossless prediction filter for native pixel data: the pure-Python/numpy twin of
``_predict.pyx``.

Why: raw 16-bit pixels reach ~2.4x with zstd alone. Predicting each sample from its causal
neighbours (the LOCO-I/MED predictor of JPEG-LS) leaves small residuals; splitting them by a
*context* (how busy the neighbourhood is) into separate streams lets zstd's entropy stage fit
one distribution per context, which is most of what JPEG-LS's context modelling buys. On a real
512x512 CT this gives ~4.7x at zstd-19 vs 4.9x for JPEG-LS, and decodes several times faster.

Model (identical in both twins, checked by the tests):

* samples are ``bits`` (8 or 16) wide, little endian, ``samples`` interleaved per pixel, signed
  or not; the image is ``height`` rows of ``width`` pixels (frames are stacked as more rows);
* signed samples are first biased to offset binary (x + 2**(bits-1)): MED residuals and
  contexts are translation invariant, so this only spares the decoder sign handling;
* neighbours of a sample (same component): a = left, b = above, c = above-left, d = above-right,
  e = two left of b, f = two rows up. The row above is extended at both ends by repeating its
  first/last pixel (so c = e = b in column 0, d = b in the last); column 0 has a = b; the row
  two up of row 1 is row 0;
* prediction: MED (min(a,b) if c >= max(a,b); max(a,b) if c <= min(a,b); else a + b - c);
  row 0 predicts from the left (the first sample from the bias, i.e. 0 before biasing);
* residual: (x - prediction) modulo 2**bits as a signed value, zigzag mapped to unsigned;
* context: bit length of |b - c| + |b - d| + |c - e| + |b - f|, capped at CONTEXTS - 1; row 0 is
  context 0. Only rows above count, so the decoder computes it off its serial chain through a;
* output: the residuals of each context in raster order, context after context; for 16 bits
  the low bytes of every stream first, then the high bytes (byte-plane shuffle).

``encode`` returns (planes, counts per context); ``decode`` needs both (the caller stores the
counts) and raises ValueError on inconsistent sizes, never returns a wrong-sized result.
"""

from __future__ import annotations

import numpy as np

__all__ = ["CONTEXTS", "decode", "encode"]

#: Number of residual streams (activity classes).
CONTEXTS = 12


def _check(n_bytes: int, width: int, height: int, samples: int, bits: int) -> int:
    if bits not in (8, 16):
        raise ValueError(f"bits must be 8 or 16, not {bits}")
    if width < 0 or height < 0 or samples < 1:
        raise ValueError("bad image shape")
    n = width * height * samples
    if n * (bits // 8) != n_bytes:
        raise ValueError(f"{n_bytes} bytes do not hold {height}x{width}x{samples} {bits}-bit")
    return n


def _values(data, n: int, bits: int, signed: bool) -> np.ndarray:
    """The samples as unsigned values (signed ones biased to offset binary)."""
    x = np.frombuffer(data, dtype=f"<u{bits // 8}", count=n).astype(np.int64)
    return x ^ (1 << (bits - 1)) if signed else x


def _above(prev: np.ndarray, shift: int) -> np.ndarray:
    """The row(s) above, moved ``shift`` pixels right (negative: left), ends repeated."""
    w = prev.shape[1]
    idx = np.clip(np.arange(w) - shift, 0, w - 1)
    return prev[:, idx]


def encode(
    data: bytes | bytearray | memoryview,
    width: int,
    height: int,
    samples: int,
    bits: int,
    signed: bool,
) -> tuple[bytes, list[int]]:
    """(shuffled residual planes, residual count per context)."""
    n = _check(len(memoryview(data).cast("B")), width, height, samples, bits)
    if n == 0:
        return b"", [0] * CONTEXTS
    x = _values(data, n, bits, signed).reshape(height, width, samples)
    bias = (1 << (bits - 1)) if signed else 0
    pred = np.empty_like(x)
    ctx = np.zeros(x.shape, dtype=np.int64)
    # row 0: from the left
    pred[0, 0] = bias
    pred[0, 1:] = x[0, :-1]
    if height > 1:
        prev = x[:-1]
        b = prev
        c = _above(prev, 1)
        d = _above(prev, -1)
        e = _above(prev, 2)
        f = np.concatenate([x[:1], x[:-2]])
        a = np.concatenate([b[:, :1], x[1:, :-1]], axis=1)
        hi = np.maximum(a, b)
        lo = np.minimum(a, b)
        pred[1:] = np.clip(a + b - c, lo, hi)
        act = np.abs(b - c) + np.abs(b - d) + np.abs(c - e) + np.abs(b - f)
        ctx[1:] = np.minimum(np.frexp(act.astype(np.float64))[1], CONTEXTS - 1)
    mask = (1 << bits) - 1
    half = 1 << (bits - 1)
    r = ((x - pred) & mask ^ half) - half  # signed residual in bits
    zz = (((r << 1) ^ (r >> 63)) & mask).ravel()
    ctx = ctx.ravel()
    order = np.argsort(ctx, kind="stable")
    counts = np.bincount(ctx, minlength=CONTEXTS).tolist()
    streams = zz[order]
    if bits == 8:
        return streams.astype(np.uint8).tobytes(), counts
    return (streams & 0xFF).astype(np.uint8).tobytes() + (streams >> 8).astype(
        np.uint8
    ).tobytes(), counts


def decode(
    planes: bytes | bytearray | memoryview,
    counts: list[int],
    width: int,
    height: int,
    samples: int,
    bits: int,
    signed: bool,
) -> bytes:
    """The original pixel bytes from ``encode``'s output."""
    nbytes = bits // 8
    n = _check(width * height * samples * nbytes, width, height, samples, bits)
    if len(counts) != CONTEXTS or any(k < 0 for k in counts) or sum(counts) != n:
        raise ValueError("residual counts do not match the image")
    p = bytes(memoryview(planes).cast("B"))
    if len(p) != n * nbytes:
        raise ValueError(f"{len(p)} residual bytes for {n} samples of {bits} bits")
    starts = [0] * CONTEXTS
    for k in range(1, CONTEXTS):
        starts[k] = starts[k - 1] + counts[k - 1]
    cursor = starts[:]
    ends = [starts[k] + counts[k] for k in range(CONTEXTS)]
    mask = (1 << bits) - 1
    bias = (1 << (bits - 1)) if signed else 0
    s = samples
    row_len = width * s
    out = np.empty(n, dtype=np.int64)
    prev: list[int] = []
    prev2: list[int] = []
    for y in range(height):
        cur = [0] * row_len
        for i in range(row_len):
            if y == 0:
                pred = cur[i - s] if i >= s else bias
                k = 0
            else:
                b = prev[i]
                c = prev[max(i - s, i % s)]
                e = prev[max(i - 2 * s, i % s)]
                d = prev[i + s] if i + s < row_len else b
                a = cur[i - s] if i >= s else b
                pred = min(max(a + b - c, min(a, b)), max(a, b))
                act = abs(b - c) + abs(b - d) + abs(c - e) + abs(b - prev2[i])
                k = min(act.bit_length(), CONTEXTS - 1)
            j = cursor[k]
            if j >= ends[k]:
                raise ValueError("residual streams do not match their counts")
            cursor[k] = j + 1
            zz = p[j] if nbytes == 1 else p[j] | p[n + j] << 8
            cur[i] = (pred + ((zz >> 1) ^ -(zz & 1))) & mask
        out[y * row_len : (y + 1) * row_len] = cur
        prev2 = prev if y else cur
        prev = cur
    return (out ^ bias).astype(f"<u{nbytes}").tobytes()
