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

"""Section 1: a disk cloned from Glance's Ceph store, against what it
cannot do without: one ``GET /v2/images/{id}`` and librbd's clone + resize.
"""

import time

from tools.bench.figures import Target
from tools.bench.image_data import ImageData
from tools.bench.progress import log
from tools.bench.sections import alternate
from tools.bench.sizes import disk_gb
from tools.bench.sizes import GiB
from tools.bench.sizes import size_text


def measure(bench):
    for size in bench.config.clone_sizes:
        bench.ensure_room(size, 2 * size, 'clone %s' % size_text(size))
        image = bench.attempt(
            'upload for clone %s' % size_text(size),
            lambda: bench.glance.create(lambda: ImageData(size),
                                        backend='ceph'), timed=False)
        fig = bench.figure(
            1, 'clone-%d' % size, 'clone, %s' % size_text(size), 's',
            'librbd clone + resize + Glance GET image',
            Target('<=', 1.5, '<= 1.5x'))
        try:
            if size == bench.config.clone_sizes[0]:  # unmeasured
                bench.attempt('clone warm-up', lambda: sample(
                    bench, image, size, 0, 'clone warm-up'))
            for rep in range(bench.config.repetitions):
                out = bench.attempt(
                    'clone %s rep %d' % (size_text(size), rep + 1),
                    lambda: sample(
                        bench, image, size, rep, 'clone %s rep %d' % (
                            size_text(size), rep + 1)))
                fig.samples.append(out['imaged'])
                fig.baseline_samples.append(out['librbd'])
                bench.plot_point('clone (imaged)', size, out['imaged'])
                bench.plot_point('clone: librbd (baseline)', size,
                                 out['librbd'])
        finally:
            bench.forget_image(image['id'])


def sample(bench, image, size, rep, what):
    size_gb, out = disk_gb(size), {}
    with bench.disks() as made:
        def by_imaged():
            out['imaged'], result, _mem = made.create(image['id'], size_gb)
            out['steps'] = ', '.join(result.get('timings', []))
            if result['strategy'] != 'clone':
                raise RuntimeError(
                    "imaged made a %s, not a clone, of image %s in "
                    "Glance's Ceph store" % (result['strategy'],
                                             image['id']))

        def by_librbd():
            name = made.baseline_name()
            started = time.monotonic()
            bench.glance.client.images.get(image['id'])
            bench.ceph.clone(image['id'], name, size_gb * GiB)
            out['librbd'] = time.monotonic() - started
        alternate(rep, by_imaged, by_librbd)
    log('%s: imaged %.3fs (%s), baseline %.3fs', what, out['imaged'],
        out['steps'], out['librbd'])
    return out
