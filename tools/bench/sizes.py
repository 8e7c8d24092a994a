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
