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

"""Section 3: a sparse image's first disk, against the naive way."""

from tools.bench.image_data import ImageData
from tools.bench.sections import download
from tools.bench.sizes import size_text


def measure(bench):
    size, data = bench.config.sparse
    bench.ensure_room(2 * size + data, 2 * data, 'sparse %s' %
                      size_text(size))
    fig = bench.figure(
        3, 'sparse', 'sparse %s (%s data), first disk' % (
            size_text(size), size_text(data)), 's',
        'naive: download, rbd import')
    for rep in range(bench.config.repetitions):
        out = bench.attempt('sparse rep %d' % (rep + 1), lambda: (
            download.sample(bench, 'sparse', lambda: ImageData.spread(
                size, data), size, rep)))
        fig.samples.append(out['first'])
        fig.baseline_samples.append(out['naive'])
        bench.plot_point('sparse, first disk (imaged)', size, out['first'])
        bench.plot_point('sparse: naive (baseline)', size, out['naive'])
