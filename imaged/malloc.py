# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at
#
#      http://www.apache.org/licenses/LICENSE-2.0
#
# Unless required by applicable law or agreed to in writing, software
# distributed under the License is distributed on an "AS IS" BASIS, WITHOUT
# WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied. See the
# License for the specific language governing permissions and limitations
# under the License.

"""Keeping the daemon's memory flat across large downloads.

A download passes gigabytes through 1 MiB and 4 MiB buffers on several
threads; glibc then keeps freed memory in per-thread arenas, and the
worker's RSS grows with every image. Fewer arenas, and handing free memory
back after each download, keep it at its resting size.
"""

import ctypes
import functools

_M_ARENA_MAX = -8


@functools.cache
def _libc():
    """The C library the process already uses (no ldconfig lookup)."""
    try:
        return ctypes.CDLL(None)
    except OSError:
        return None


def limit_arenas(count=2):
    """Use at most ``count`` malloc arenas (glibc only; else a no-op)."""
    libc = _libc()
    if libc is not None and hasattr(libc, 'mallopt'):
        libc.mallopt(_M_ARENA_MAX, count)


def release_free_memory():
    """Return freed heap memory to the system (glibc only; else a no-op)."""
    libc = _libc()
    if libc is not None and hasattr(libc, 'malloc_trim'):
        libc.malloc_trim(0)
