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

"""Section 4: a qcow2 image's first disk, against the naive way (which
converts with qemu-img)."""

import os
import subprocess

from tools.bench.figures import Target
from tools.bench.image_data import ImageData
from tools.bench.image_data import ImageFile
from tools.bench.sections import download
from tools.bench.sizes import size_text


def measure(bench):
    size, data = bench.config.qcow2
    bench.ensure_room(2 * size + 2 * data, 2 * data, 'qcow2')
    raw = os.path.join(bench.workdir, 'qcow2-source.raw')
    qcow2 = os.path.join(bench.workdir, 'image.qcow2')
    ImageData.spread(size, data).write_sparse(raw)
    subprocess.run(['qemu-img', 'convert', '-f', 'raw', '-O', 'qcow2',
                    raw, qcow2], check=True, capture_output=True)
    os.unlink(raw)
    fig = bench.figure(
        4, 'qcow2', 'qcow2 %s (%s data), first disk' % (
            size_text(size), size_text(data)), 's',
        'naive: download, qemu-img convert, rbd import',
        Target('<=', 1 / 1.5, '<= 0.67x (1.5x faster)'))
    for rep in range(bench.config.repetitions):
        out = bench.attempt('qcow2 rep %d' % (rep + 1), lambda: (
            download.sample(bench, 'qcow2', lambda: ImageFile(qcow2), size,
                            rep, disk_format='qcow2')))
        fig.samples.append(out['first'])
        fig.baseline_samples.append(out['naive'])
        bench.plot_point('qcow2, first disk (imaged)', size, out['first'])
        bench.plot_point('qcow2: naive (baseline)', size, out['naive'])
    os.unlink(qcow2)
