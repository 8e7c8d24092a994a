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

"""What a run measures: the full and the quick configuration."""

import dataclasses
import os

from tools.bench.sizes import GiB
from tools.bench.sizes import MiB

# The repository the benchmark (and, by default, the daemon) runs from.
REPO = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))


@dataclasses.dataclass
class Config:
    repetitions: int
    clone_sizes: tuple
    download_sizes: tuple
    sparse: tuple            # (virtual size, bytes of data)
    qcow2: tuple             # (virtual size, bytes of data)
    dedup_calls: int
    dedup_size: int
    rpc_calls: int
    memory_sizes: tuple
    call_timeout: int        # seconds a create_root_disk call may take
    storm_agents: int = 6    # agents (hosts) on one pool in the storm
    storm_callers: tuple = (8, 16)  # callers per agent, released together
    storm_size: int = 256 * MiB
    # (agents, callers) of each storm; default: storm_agents x each of
    # storm_callers.
    storm_shapes: tuple = ()
    signature_size: int = GiB  # the signed image of section signatures
    # New raw images of section lazy (lazy_first_disk, and not).
    lazy_sizes: tuple = (256 * MiB, GiB, 4 * GiB)
    # (agents, callers) of section lazy_storm's storms (of storm_size).
    lazy_storm: tuple = (6, 16)
    # The lazy agents publish a plain base from the download.
    lazy_plain_base: bool = False

    def storms(self):
        return self.storm_shapes or tuple(
            (self.storm_agents, c) for c in self.storm_callers)


FULL = Config(repetitions=3, clone_sizes=(64 * MiB, GiB, 4 * GiB),
              download_sizes=(256 * MiB, GiB, 4 * GiB),
              sparse=(4 * GiB, 256 * MiB),
              qcow2=(GiB, 256 * MiB), dedup_calls=16, dedup_size=256 * MiB,
              rpc_calls=200, memory_sizes=(GiB, 4 * GiB), call_timeout=900)
QUICK = Config(repetitions=1, clone_sizes=(4 * MiB, 32 * MiB),
               download_sizes=(8 * MiB, 32 * MiB), sparse=(64 * MiB, 8 * MiB),
               qcow2=(32 * MiB, 8 * MiB), dedup_calls=16, dedup_size=8 * MiB,
               rpc_calls=50, memory_sizes=(8 * MiB, 32 * MiB),
               call_timeout=120, storm_agents=2, storm_callers=(4,),
               storm_size=8 * MiB, signature_size=8 * MiB,
               lazy_sizes=(8 * MiB, 32 * MiB), lazy_storm=(2, 4))
