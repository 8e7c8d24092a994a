"""Sizes as the benchmark counts and prints them."""

import math

MiB = 1 << 20
GiB = 1 << 30


def size_text(n):
    if n >= GiB and n % GiB == 0:
        return '%d GiB' % (n // GiB)
    return '%d MiB' % (n // MiB)


def disk_gb(size):
    return max(1, math.ceil(size / GiB))
