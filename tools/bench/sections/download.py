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

"""Section 2: a disk made by download, first and second, against the naive
way and against the floor; ``sample`` also serves the sparse and qcow2
sections.

The floor of a raw download is the slowest of three things that can all
overlap, each measured alone in the same repetition on the same bytes:
Glance sending them (read and dropped, unverified), their SHA-512 (Glance's
``os_hash_value``) and ``rbd import`` of them from a local file.
"""

import os
import statistics

from tools.bench import baselines
from tools.bench.figures import Target
from tools.bench.image_data import ImageData
from tools.bench import machine
from tools.bench.progress import log
from tools.bench.sections import alternate
from tools.bench.sections import memory
from tools.bench.sizes import disk_gb
from tools.bench.sizes import size_text

PARTS = ('Glance alone', 'SHA-512 alone', 'rbd import alone')


def measure(bench):
    for size in bench.config.download_sizes:
        text = size_text(size)
        bench.ensure_room(4 * size, 4 * size, 'download %s' % text)
        first = bench.figure(
            2, 'download-%d' % size, 'download %s, first disk' % text,
            's', 'naive: download, rbd import',
            Target('<=', 1 / 1.5, '<= 0.67x (1.5x faster)'))
        floored = bench.figure(
            2, 'download-floor-%d' % size,
            'download %s, first disk against the floor' % text, 's',
            'floor', Target('<=', 1.2, '<= 1.2x'))
        first.cpu = []
        floor = bench.figure(
            2, 'floor-%d' % size, 'floor %s: slowest of Glance, SHA-512, '
            'rbd import alone' % text, 's', 'naive')
        floor.parts = {part: [] for part in PARTS}
        hit = bench.figure(
            2, 'cache-hit-%d' % size, 'download %s, second disk' % text,
            's', 'imaged, first disk',
            Target('<=', 1 / 5, '<= 0.2x (5x faster)'))
        source = os.path.join(bench.workdir, 'floor-%d.raw' % size)
        ImageData(size).write_sparse(source)  # the bytes Glance holds
        try:
            for rep in range(bench.config.repetitions):
                out = bench.attempt(
                    'download %s rep %d' % (text, rep + 1),
                    lambda: sample(
                        bench, 'download %s' % text, lambda: ImageData(size),
                        size, rep, second=True, floor_source=source))
                first.samples.append(out['first'])
                first.baseline_samples.append(out['naive'])
                floored.samples.append(out['first'])
                floored.baseline_samples.append(out['floor'])
                floor.samples.append(out['floor'])
                floor.baseline_samples.append(out['naive'])
                for part in PARTS:
                    floor.parts[part].append(out[part])
                hit.samples.append(out['second'])
                hit.baseline_samples.append(out['first'])
                hit.notes.append('second disk by %s' % out['second_strategy'])
                if 'machine CPU' in out:
                    first.cpu.append((out['first'], out['worker CPU'],
                                      out['machine CPU']))
                memory.record(bench, size, out['memory'])
                bench.plot_point('download, first disk (imaged)', size,
                                 out['first'])
                bench.plot_point('download, second disk (imaged)', size,
                                 out['second'])
                bench.plot_point('download: naive (baseline)', size,
                                 out['naive'])
                bench.plot_point('download: floor (baseline)', size,
                                 out['floor'])
        finally:
            os.unlink(source)
        floor.notes.append(describe_floor(floor))
        if first.cpu:
            first.notes.append(describe_cpu(first.cpu, bench.nproc))


def describe_cpu(samples, nproc):
    """How busy the machine was during imaged's first disks: CPU seconds
    of its worker and of every process, against what the CPUs could give.
    """
    wall, worker, busy = (statistics.median(s) for s in zip(*samples))
    return ('during the first disk (medians): %.2f s, imaged\'s worker '
            '%.2f s of CPU, the whole machine %.2f s of the %.2f s its %d '
            'CPUs had (%.0f%% busy)' % (wall, worker, busy, nproc * wall,
                                        nproc, 100 * busy / (nproc * wall)))


def describe_floor(floor):
    """What the floor is made of, and how much faster than naive it lets
    imaged be."""
    parts = ', '.join('%s %.2f s' % (part, statistics.median(samples))
                      for part, samples in floor.parts.items() if samples)
    allows = ('; it allows at best %.2fx faster than naive' %
              (1 / floor.ratio)) if floor.ratio else ''
    return 'medians: %s%s' % (parts, allows)


def sample(bench, what, data, size, rep, disk_format='raw', second=False,
           floor_source=None):
    """One fresh image: imaged's first (and second) disk, the naive way,
    and (given the image's bytes in ``floor_source``) the floor's parts.

    :returns: dict of seconds and the first call's memory figures.
    """
    size_gb, out = disk_gb(size), {}
    with bench.fresh_image(data, disk_format) as image, \
            bench.disks() as made:
        def by_imaged():
            worker = bench.agent.worker()
            before = machine.cpu_seconds(worker) if worker else None
            out['first'], _res, out['memory'] = made.create(image['id'],
                                                            size_gb)
            after = machine.cpu_seconds(worker) if worker else None
            if before and after and None not in (before[0], after[0]):
                # Where the first disk's time goes: imaged's worker, and
                # every process of the machine (Glance and the OSD here).
                out['worker CPU'] = after[0] - before[0]
                out['machine CPU'] = after[1] - before[1]
            if second:
                out['second'], res, _mem = made.create(image['id'],
                                                       size_gb)
                out['second_strategy'] = res['strategy']

        def naive():
            out['naive'] = baselines.naive_create(bench, made, image['id'],
                                                  size_gb, disk_format)

        def floor():
            out['Glance alone'] = baselines.glance_alone(bench, image['id'],
                                                         size)
            out['SHA-512 alone'] = baselines.sha512_alone(data)
            out['rbd import alone'] = baselines.import_alone(
                bench, made, floor_source, size_gb)
            out['floor'] = max(out[part] for part in PARTS)
        alternate(rep, by_imaged, naive,
                  *([floor] if floor_source else []))
    log('%s rep %d: %s', what, rep + 1, ', '.join(
        '%s %.2fs' % (k, v) for k, v in out.items()
        if isinstance(v, float)))
    return out
