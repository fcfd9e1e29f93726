"""Float64 sums, 2-norms and dot products in the order of operations of torch's CPU kernels.

The similarity measures (`similarity`) were first written in torch; their values are written to the report at full
precision, so the numpy versions must give the very same numbers, not just close ones. numpy sums pairwise (eight
accumulators, blocks of 128) and its matmul goes to OpenBLAS; torch 2.x on x86 sums with 4-lane vectors into a
cascade of 16-row blocks (aten/src/ATen/native/cpu/SumKernel.cpp: `row_sum`, `multi_row_sum`), takes a 2-norm in 4
lanes and adds the left-over elements with fused multiply-adds (ReduceOpsKernel.cpp, the p = 2 last-dim fast path),
and MKL's dgemm accumulates each dot product of a small product in order, one fused multiply-add per term. The two
differ in the last bit or two; the functions here repeat torch's order (checked against torch 2.13 on x86 CPUs,
tests/test_similarity.py). Inputs are converted to float64; results are float64.
"""

from __future__ import annotations

import numpy as np

LANES = 4  # doubles per torch vector (Vectorized<double>) in these kernels
ILP = 4  # independent accumulators of torch's row_sum
_SPLIT = 134217729.0  # 2**27 + 1: Veltkamp's split of a double into two 26-bit halves


def fma(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """a * b + c rounded once, elementwise (broadcasting), as a fused multiply-add instruction gives it.

    Exact product by Dekker's two-product, then Boldo and Melquiond's correctly rounded sum of three terms
    (round to odd, 2008); valid without overflow or underflow (|values| between about 1e-290 and 1e290).
    """
    a, b, c = (np.asarray(v, dtype=np.float64) for v in (a, b, c))
    product, error = _two_product(a, b)
    high, low = _two_sum(c, product)
    return high + _add_round_to_odd(low, error)


def sum_all(x: np.ndarray) -> float:
    """torch.sum of all of x's values (contiguous, row-major)."""
    flat = np.asarray(x, dtype=np.float64).reshape(-1)
    if flat.size < LANES:
        return float(0.0 + _row_sum(flat))
    vectors = flat.size // LANES
    lanes = _row_sum(flat[: vectors * LANES].reshape(vectors, LANES))
    total = 0.0
    for value in flat[vectors * LANES :]:  # the elements left over after the last full vector come first
        total += float(value)
    for value in lanes:
        total += float(value)
    return 0.0 + total


def sum_rows(x: np.ndarray) -> np.ndarray:
    """torch's x.sum(0) of a row-major [R, C] array: [C]."""
    x = np.asarray(x, dtype=np.float64)
    rows, cols = x.shape
    out, j = np.zeros(cols), 0
    block = ILP * LANES
    while j + block <= cols:  # 16 columns at once: four vectors, one cascade each
        out[j : j + block] = _cascade(x[:, j : j + block].reshape(rows, ILP, LANES)).reshape(-1)
        j += block
    while j + LANES <= cols:
        out[j : j + LANES] = _row_sum(x[:, j : j + LANES])
        j += LANES
    for col in range(j, cols):
        out[col] = _row_sum(x[:, col])
    return 0.0 + out


def norm(x: np.ndarray) -> float:
    """torch.linalg.vector_norm (2-norm) of all of x's values."""
    return float(row_norms(np.asarray(x, dtype=np.float64).reshape(1, -1))[0])


def row_norms(x: np.ndarray) -> np.ndarray:
    """The 2-norm of each row of an [R, C] array, as torch takes it over the last dimension: [R]."""
    x = np.asarray(x, dtype=np.float64)
    rows, cols = x.shape
    full = cols - cols % LANES
    squares = (x[:, :full] * x[:, :full]).reshape(rows, -1, LANES)
    lanes = np.add.accumulate(squares, axis=1)[:, -1, :] if full else np.zeros((rows, LANES))
    total = lanes[:, 0]
    for k in range(1, LANES):
        total = total + lanes[:, k]
    for col in range(full, cols):
        total = fma(x[:, col], x[:, col], total)
    return np.sqrt(total)


def gram(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a @ b.T for a [L1, H], b [L2, H], each entry sum_k a_ik * b_jk accumulated over k in order with fused
    multiply-adds (MKL's order for small products): [L1, L2]."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    out = np.zeros((a.shape[0], b.shape[0]))
    for k in range(a.shape[1]):
        out = fma(a[:, k, None], b[None, :, k], out)
    return out


def _cascade(rows: np.ndarray) -> np.ndarray:
    """torch's multi_row_sum: rows [n, ...] summed in blocks of 16, block sums carried up four levels: [...]."""
    n = rows.shape[0]
    power = max(4, _ceil_log2(n) // 4)
    step = 1 << power
    levels = [np.zeros(rows.shape[1:]) for _ in range(4)]
    i = 0
    while i + step <= n:
        levels[0] = levels[0] + np.add.accumulate(rows[i : i + step], axis=0)[-1]  # level 0 is empty here
        i += step
        for j in range(1, 4):
            levels[j], levels[j - 1] = levels[j] + levels[j - 1], np.zeros(rows.shape[1:])
            if i & ((step - 1) << (j * power)):
                break
    if i < n:
        levels[0] = levels[0] + np.add.accumulate(rows[i:], axis=0)[-1]
    total = levels[0]
    for j in range(1, 4):
        total = total + levels[j]
    return total


def _row_sum(x: np.ndarray) -> np.ndarray:
    """torch's row_sum: x [n, ...] over its first axis with ILP interleaved accumulators: [...]."""
    n = x.shape[0]
    grouped = n // ILP
    partial = _cascade(x[: grouped * ILP].reshape((grouped, ILP) + x.shape[1:]))
    total = partial[0]
    for i in range(grouped * ILP, n):
        total = total + x[i]
    for k in range(1, ILP):
        total = total + partial[k]
    return total


def _ceil_log2(n: int) -> int:
    return 1 if n <= 2 else (n - 1).bit_length()


def _two_sum(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """s, e with s = fl(a + b) and s + e = a + b exactly (Knuth)."""
    s = a + b
    b_virtual = s - a
    return s, (a - (s - b_virtual)) + (b - b_virtual)


def _two_product(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """p, e with p = fl(a * b) and p + e = a * b exactly (Dekker, with Veltkamp's split)."""
    p = a * b
    a_high, a_low = _split(a)
    b_high, b_low = _split(b)
    return p, a_low * b_low - (((p - a_high * b_high) - a_low * b_high) - a_high * b_low)


def _split(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    c = _SPLIT * a
    high = c - (c - a)
    return high, a - high


def _add_round_to_odd(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a + b rounded to odd: exact when representable, else the neighbour of the sum whose last bit is 1."""
    s, e = _two_sum(a, b)
    even = (np.asarray(s, dtype=np.float64).view(np.int64) & 1) == 0
    return np.where((e != 0) & even, np.nextafter(s, np.where(e > 0, np.inf, -np.inf)), s)
