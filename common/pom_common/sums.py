"""NumPy's float summation, reproduced to the bit on data fed piece by piece (numba).

``np.mean``/``np.std`` of a large array (mrcfile's header statistics, the ``volume``
normalisation) need the whole array in memory, and ``std`` makes a temporary as large
again. The sums here give the same bits from pieces of the array fed in order, so
statistics can be computed slab by slab in bounded memory.

NumPy sums a contiguous array without a dtype cast by *pairwise summation* over the whole
(flattened) array: a block of at most 128 elements is summed with 8 accumulators, a longer
range is split in two near its middle (on a multiple of 8) and the halves are added. With a
cast (``uint16`` data summed as ``float32``, ``float32`` summed as ``float64``) it sums
buffers of :data:`NUMPY_BUFFER` elements pairwise and adds them in order. The splits
depend only on the total length, so :class:`StreamSum` knows the whole tree in advance
and evaluates each node as soon as its elements have arrived, keeping fewer than 128
elements between pieces.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import numpy as np

from .jit import compiled

#: NumPy's ufunc buffer size (``np.getbufsize()``): a sum with a dtype cast goes this many elements at a time.
NUMPY_BUFFER = 8192
#: Longest range NumPy sums with 8 accumulators instead of splitting it.
_BLOCK = 128


@functools.cache
def _kernels() -> dict[tuple[type, bool], Any]:
    """(accumulator type, square) -> numba pairwise sum ``(a, lo, n, center)``; compiled lazily."""
    import numba

    def make(acc_type: Any, square: bool, cache: bool) -> Any:
        # Each variant gets its own name: numba's on-disk cache tells functions apart by name.
        variant = f"{np.dtype(acc_type).name}_{'squares' if square else 'values'}"

        def jit(func: Any) -> Any:
            func.__qualname__ = func.__name__ = f"{func.__name__}_{variant}"
            return numba.njit(cache=cache, nogil=True)(func)

        # Eight named accumulators (not an array) so that LLVM keeps them in one vector register.
        @jit
        def block(a: Any, lo: Any, n: Any, m: Any) -> Any:  # 8 <= n <= 128
            if square:
                d0, d1, d2, d3 = acc_type(a[lo]) - m, acc_type(a[lo + 1]) - m, acc_type(a[lo + 2]) - m, acc_type(a[lo + 3]) - m
                d4, d5, d6, d7 = acc_type(a[lo + 4]) - m, acc_type(a[lo + 5]) - m, acc_type(a[lo + 6]) - m, acc_type(a[lo + 7]) - m
                r0, r1, r2, r3, r4, r5, r6, r7 = d0 * d0, d1 * d1, d2 * d2, d3 * d3, d4 * d4, d5 * d5, d6 * d6, d7 * d7
            else:
                r0, r1, r2, r3 = acc_type(a[lo]), acc_type(a[lo + 1]), acc_type(a[lo + 2]), acc_type(a[lo + 3])
                r4, r5, r6, r7 = acc_type(a[lo + 4]), acc_type(a[lo + 5]), acc_type(a[lo + 6]), acc_type(a[lo + 7])
            i = 8
            end = n - (n % 8)
            while i < end:
                p = lo + i
                if square:
                    d0, d1, d2, d3 = acc_type(a[p]) - m, acc_type(a[p + 1]) - m, acc_type(a[p + 2]) - m, acc_type(a[p + 3]) - m
                    d4, d5, d6, d7 = acc_type(a[p + 4]) - m, acc_type(a[p + 5]) - m, acc_type(a[p + 6]) - m, acc_type(a[p + 7]) - m
                    r0 += d0 * d0
                    r1 += d1 * d1
                    r2 += d2 * d2
                    r3 += d3 * d3
                    r4 += d4 * d4
                    r5 += d5 * d5
                    r6 += d6 * d6
                    r7 += d7 * d7
                else:
                    r0 += acc_type(a[p])
                    r1 += acc_type(a[p + 1])
                    r2 += acc_type(a[p + 2])
                    r3 += acc_type(a[p + 3])
                    r4 += acc_type(a[p + 4])
                    r5 += acc_type(a[p + 5])
                    r6 += acc_type(a[p + 6])
                    r7 += acc_type(a[p + 7])
                i += 8
            res = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))
            while i < n:
                v = acc_type(a[lo + i])
                if square:
                    v = (v - m) * (v - m)
                res += v
                i += 1
            return res

        @jit
        def pairwise(a: Any, lo: Any, n: Any, center: Any) -> Any:
            # numpy's pairwise_sum over a[lo:lo + n] in acc_type, of (a - center)**2 if square;
            # its recursion unrolled onto a stack (numba cannot cache recursive functions)
            m = acc_type(center)
            if n < 8:
                res = acc_type(0.0)
                for i in range(lo, lo + n):
                    v = acc_type(a[i])
                    if square:
                        v = (v - m) * (v - m)
                    res += v
                return res
            if n <= _BLOCK:
                return block(a, lo, n, m)
            starts = np.empty(64, dtype=np.int64)
            sizes = np.empty(64, dtype=np.int64)
            states = np.empty(64, dtype=np.int64)  # 0: new, 1: left half pending, 2: right half pending
            values = np.empty(64, dtype=acc_type)
            top = 0
            starts[0], sizes[0], states[0] = lo, n, 0
            count = 0
            while top >= 0:
                start, size = starts[top], sizes[top]
                if size <= _BLOCK:
                    values[count] = block(a, start, size, m)
                    count += 1
                    top -= 1
                    continue
                half = size // 2
                half -= half % 8
                if states[top] == 0:
                    states[top] = 1
                    top += 1
                    starts[top], sizes[top], states[top] = start, half, 0
                elif states[top] == 1:
                    states[top] = 2
                    top += 1
                    starts[top], sizes[top], states[top] = start + half, size - half, 0
                else:
                    values[count - 2] = values[count - 2] + values[count - 1]
                    count -= 1
                    top -= 1
            return values[0]

        return pairwise

    def build(cache: bool) -> dict[tuple[type, bool], Any]:
        return {(t, sq): make(t, sq, cache) for t in (np.float32, np.float64) for sq in (False, True)}

    return compiled(build)


def pairwise_sum(a: np.ndarray, acc: type = np.float32, center: float = 0.0, square: bool = False) -> Any:
    """NumPy's pairwise sum of a whole 1-D array: ``np.add.reduce`` without a cast (acc = a's float type).

    ``square``: the sum of ``(a - center)**2``, each term rounded to ``acc`` as NumPy rounds
    the temporary ``(a - mean)**2`` of ``np.var``.
    """
    kernel = _kernels()[np.dtype(acc).type, bool(square)]
    return kernel(np.ascontiguousarray(a).reshape(-1), 0, a.size, center)


class StreamSum:
    """NumPy's sum of ``n`` elements that arrive in pieces, in order (see the module's rules).

    Parameters
    ----------
    n : the total number of elements.
    acc : the accumulator type, ``np.float32`` or ``np.float64``.
    buffered : NumPy casts the data to ``acc`` (it sums buffers of :data:`NUMPY_BUFFER`).
    center, square : sum ``(x - center)**2`` instead of ``x``.
    """

    def __init__(self, n: int, acc: type = np.float32, buffered: bool = False, center: float = 0.0,
                 square: bool = False) -> None:
        self.n = int(n)
        self.acc = np.dtype(acc).type
        self.kernel = _kernels()[self.acc, bool(square)]
        self.buffered = buffered
        self.center = center
        self.square = square
        self.seen = 0  # elements fed so far
        self.carry = np.empty(0)  # fed elements not yet summed (fewer than a block or a buffer)
        self.carry_start = 0
        self.total = self.acc(0.0)
        # Unbuffered: the nodes still to evaluate, (start, length), next last; sums of pending left halves.
        self.todo: list[tuple[int, int]] = [(0, self.n)] if self.n else []
        self.values: list[Any] = []
        self.combine: list[int] = []  # per pending split: how many values belong to it (0, 1 or 2)

    def _leaf(self, data: np.ndarray, lo: int, n: int) -> Any:
        return self.kernel(data, lo, n, self.center)

    def feed(self, piece: np.ndarray) -> None:
        """Add the next elements (any shape, C order)."""
        piece = np.ascontiguousarray(piece).reshape(-1)
        if self.seen + piece.size > self.n:
            raise ValueError(f"fed {self.seen + piece.size} elements, expected {self.n}")
        start = self.seen
        self.seen += piece.size
        if self.carry.size:  # complete the block (or buffer) begun by the previous piece
            lo, n = self._pending()
            need = lo + n - start
            if need > piece.size:
                self.carry = np.concatenate([self.carry, piece])
                return
            value = self._leaf(np.concatenate([self.carry, piece[:need]]), 0, n)
            self.carry = self.carry[:0]
            if self.buffered:
                self.total = self.acc(self.total + value)
            else:
                self.todo.pop()
                self._push(value)
            piece, start = piece[need:], start + need
        if self.buffered:
            self._feed_buffered(piece, start)
        else:
            self._feed_pairwise(piece, start)

    def _pending(self) -> tuple[int, int]:
        """(start, length) of the block or buffer the carried elements belong to."""
        if self.buffered:
            return self.carry_start, min(NUMPY_BUFFER, self.n - self.carry_start)
        return self.todo[-1]

    def _feed_buffered(self, piece: np.ndarray, start: int) -> None:
        end = start + piece.size
        lo = start
        while lo < end:
            length = min(NUMPY_BUFFER, self.n - lo)
            if lo + length > end:
                break
            self.total = self.acc(self.total + self._leaf(piece, lo - start, length))
            lo += length
        self.carry = piece[lo - start :].copy()
        self.carry_start = lo

    def _feed_pairwise(self, piece: np.ndarray, start: int) -> None:
        end = start + piece.size
        while self.todo:
            lo, n = self.todo[-1]
            if lo + n <= end:  # every element here: NumPy's sum of this node
                self.todo.pop()
                self._push(self._leaf(piece, lo - start, n))
            elif lo >= end or n <= _BLOCK:  # wait for more
                break
            else:  # split as NumPy does; the left half comes first
                self.todo.pop()
                n2 = n // 2
                n2 -= n2 % 8
                self.combine.append(0)
                self.todo.append((lo + n2, n - n2))
                self.todo.append((lo, n2))
        first = self.todo[-1][0] if self.todo else end
        self.carry = piece[min(max(first, start), end) - start :].copy()

    def _push(self, value: Any) -> None:
        while self.combine:
            if self.combine[-1] == 0:
                self.combine[-1] = 1
                self.values.append(value)
                return
            self.combine.pop()
            value = self.acc(self.values.pop() + value)
        self.total = value

    def result(self) -> Any:
        """The sum, once all ``n`` elements were fed."""
        if self.seen != self.n:
            raise ValueError(f"fed {self.seen} of {self.n} elements")
        return self.total


@functools.cache
def _moment_kernel() -> Any:
    """The numba kernel ``(a, start, center, lanes)``: adds ``a - center`` and its square into ``lanes`` (2, 8) float64."""
    import numba

    def build(cache: bool) -> Any:
        @numba.njit(cache=cache, nogil=True)
        def moments_into(a: Any, start: Any, center: Any, lanes: Any) -> None:
            # Element g of the whole array goes to lane g % 8, and each lane adds its elements in
            # order: the sums do not depend on how the array was cut into pieces.
            n = a.size
            i = 0
            while i < n and (start + i) % 8:
                d = np.float64(a[i]) - center
                lanes[0, (start + i) % 8] += d
                lanes[1, (start + i) % 8] += d * d
                i += 1
            s0, s1, s2, s3 = lanes[0, 0], lanes[0, 1], lanes[0, 2], lanes[0, 3]
            s4, s5, s6, s7 = lanes[0, 4], lanes[0, 5], lanes[0, 6], lanes[0, 7]
            q0, q1, q2, q3 = lanes[1, 0], lanes[1, 1], lanes[1, 2], lanes[1, 3]
            q4, q5, q6, q7 = lanes[1, 4], lanes[1, 5], lanes[1, 6], lanes[1, 7]
            end = i + (n - i) // 8 * 8
            while i < end:
                d0, d1 = np.float64(a[i]) - center, np.float64(a[i + 1]) - center
                d2, d3 = np.float64(a[i + 2]) - center, np.float64(a[i + 3]) - center
                d4, d5 = np.float64(a[i + 4]) - center, np.float64(a[i + 5]) - center
                d6, d7 = np.float64(a[i + 6]) - center, np.float64(a[i + 7]) - center
                s0 += d0
                s1 += d1
                s2 += d2
                s3 += d3
                s4 += d4
                s5 += d5
                s6 += d6
                s7 += d7
                q0 += d0 * d0
                q1 += d1 * d1
                q2 += d2 * d2
                q3 += d3 * d3
                q4 += d4 * d4
                q5 += d5 * d5
                q6 += d6 * d6
                q7 += d7 * d7
                i += 8
            lanes[0, 0], lanes[0, 1], lanes[0, 2], lanes[0, 3] = s0, s1, s2, s3
            lanes[0, 4], lanes[0, 5], lanes[0, 6], lanes[0, 7] = s4, s5, s6, s7
            lanes[1, 0], lanes[1, 1], lanes[1, 2], lanes[1, 3] = q0, q1, q2, q3
            lanes[1, 4], lanes[1, 5], lanes[1, 6], lanes[1, 7] = q4, q5, q6, q7
            while i < n:
                d = np.float64(a[i]) - center
                lanes[0, (start + i) % 8] += d
                lanes[1, (start + i) % 8] += d * d
                i += 1

        return moments_into

    return compiled(build)


class StreamStd:
    """The standard deviation of elements that arrive in pieces, in order, in one pass (float64).

    The sums are taken about the first element (so a constant array gives exactly 0 and
    the cancellation of ``E[d^2] - E[d]^2`` is harmless) in 8 lanes keyed on each element's
    position: the result does not depend on how the array was cut. It is not NumPy's
    float32 two-pass ``std`` to the bit, which needs the mean before the second pass; it is
    closer to the exact value, and differs from NumPy's float32 result by that result's own
    rounding error (a few float32 ulps; bounded by a test).
    """

    def __init__(self) -> None:
        self.kernel = _moment_kernel()
        self.lanes = np.zeros((2, 8), dtype=np.float64)
        self.center: float | None = None
        self.seen = 0

    def feed(self, piece: np.ndarray) -> None:
        """Add the next elements (any shape, C order)."""
        flat = np.ascontiguousarray(piece).reshape(-1)
        if not flat.size:
            return
        if self.center is None:
            self.center = float(np.float64(flat[0]))
        self.kernel(flat, self.seen, np.float64(self.center), self.lanes)
        self.seen += flat.size

    def result(self) -> float:
        """The population standard deviation (float64; NaN when NaN or infinities were fed)."""
        if not self.seen:
            return float("nan")
        mean = math.fsum(self.lanes[0]) / self.seen
        var = math.fsum(self.lanes[1]) / self.seen - mean * mean
        return var if math.isnan(var) else math.sqrt(max(var, 0.0))  # a rounding below 0 is 0


def numpy_mean_std(n: int, pieces: Any, acc: type = np.float32, cast: bool = False) -> tuple[Any, Any]:
    """``a.mean(dtype=acc)`` and ``a.std(dtype=acc)`` of an array given twice as pieces.

    ``pieces()`` returns a fresh iterator over the array's pieces in order (it is read twice:
    the mean, then the squared deviations). ``cast``: the array's dtype is not ``acc``.
    """
    acc_type = np.dtype(acc).type
    total = StreamSum(n, acc_type, buffered=cast)
    for piece in pieces():
        total.feed(piece)
    mean = acc_type(np.float64(total.result()) / np.float64(n))  # NumPy divides by an intp: in float64
    squares = StreamSum(n, acc_type, center=mean, square=True)  # (a - mean) is an acc array: no cast
    for piece in pieces():
        squares.feed(piece)
    var = acc_type(np.float64(squares.result()) / np.float64(n))
    return mean, acc_type(np.sqrt(var))

