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

"""Section 7: the peak RSS of imaged's worker and parent during a download
(measured by the download section where their sizes meet)."""

from tools.bench.figures import Target
from tools.bench.image_data import ImageData
from tools.bench.progress import log
from tools.bench.sizes import disk_gb
from tools.bench.sizes import MiB
from tools.bench.sizes import size_text


def rss_figures(bench, size):
    """The worker's and the parent's figure for a download of ``size``."""
    text = size_text(size)
    target = Target('<', 150, '< 150 MiB', on='value')
    return (bench.figure(7, 'memory-%d' % size,
                         'worker peak RSS, %s download' % text, 'MiB',
                         'worker RSS before', target),
            bench.figure(7, 'memory-parent-%d' % size,
                         'parent peak RSS, %s download' % text, 'MiB',
                         'parent RSS before', target))


def record(bench, size, memory):
    """Add a sample's ``memory`` figures, if ``size`` is measured for it."""
    if size not in bench.config.memory_sizes:
        return
    worker, parent = rss_figures(bench, size)
    if not memory or None in memory.values():
        worker.notes.append("a sample could not read the worker's memory")
        return
    worker.samples.append(memory['worker_peak'] / MiB)
    worker.baseline_samples.append(memory['worker_idle'] / MiB)
    parent.samples.append(memory['parent_peak'] / MiB)
    parent.baseline_samples.append(memory['parent_idle'] / MiB)
    bench.plot_point('peak RSS, worker', size, memory['worker_peak'])


def measure(bench):
    for size in bench.config.memory_sizes:
        text = size_text(size)
        worker, _parent = rss_figures(bench, size)
        if worker.samples:  # the download section measured it
            continue
        bench.ensure_room(3 * size, 2 * size, 'memory %s' % text)
        for rep in range(bench.config.repetitions):
            out = bench.attempt('memory %s rep %d' % (text, rep + 1),
                                lambda: sample(bench, size))
            record(bench, size, out['memory'])
            bench.plot_point('download, first disk (imaged)', size,
                             out['first'])
            log('memory %s rep %d: %.2fs, worker peak %s', text,
                rep + 1, out['first'], '%.0f MiB' % worker.samples[-1]
                if worker.samples else 'unknown')


def sample(bench, size):
    with bench.fresh_image(lambda: ImageData(size)) as image, \
            bench.disks() as made:
        seconds, _res, memory = made.create(image['id'], disk_gb(size))
    return {'first': seconds, 'memory': memory}
