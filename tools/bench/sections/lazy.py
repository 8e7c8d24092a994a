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

"""Section 10 (issue 29): the first disk of a new raw image, lazy and not.

Two agents on the pool, in the same run: the run's own (the download
path) and one with ``[image_cache] lazy_first_disk = True``. Each sample
gives each agent a new raw image of the file store (same size, fresh
bytes): the seconds to its first disk, the seconds until its base image
is published in the pool (the lazy agent's is published after the call
answered; the other's before), and the bytes Glance sent for it (its
access log).
"""

import os
import re
import time
import uuid

from tools.bench.agent import Agent
from tools.bench.image_data import ImageData
from tools.bench.progress import log
from tools.bench.sections import alternate
from tools.bench.sizes import disk_gb
from tools.bench.sizes import MiB
from tools.bench.sizes import size_text

SECTION = 10
# Seconds a lazy base may take to be published after its first disk.
PUBLISH_TIMEOUT = 900
# The size of the warm-up image (not reported): a fresh agent's first call
# pays once for its connections (Keystone, Glance, Ceph), whatever the
# image's size; without it the first size measured looked slower (1.1 s
# where later samples of the same size took 0.5 s).
WARM_UP_SIZE = 8 * MiB


def measure(bench):
    workdir = os.path.join(bench.workdir, 'imaged-lazy')
    os.makedirs(workdir, exist_ok=True)
    lazy = Agent(workdir, bench.run_id + '-lazy',
                 {'image_cache': lazy_options(bench)})
    lazy.start()
    log('imaged %s (%s) is serving', lazy.host,
        ', '.join(lazy_options(bench)))
    try:
        bench.attempt('lazy warm-up', lambda: sample(
            bench, lazy, WARM_UP_SIZE, 0, 'warm-up'))
        for size in bench.config.lazy_sizes:
            _measure_size(bench, lazy, size)
    finally:
        lazy.daemon.stop()


def lazy_name(bench):
    """What the lazy agents' figures are called."""
    return 'lazy, plain base' if bench.config.lazy_plain_base else 'lazy'


def lazy_options(bench):
    """The lazy agents' ``[image_cache]`` options."""
    options = {'lazy_first_disk': 'true'}
    if bench.config.lazy_plain_base:
        options['lazy_plain_base'] = 'true'
    return options


def _measure_size(bench, lazy, size):
    text = size_text(size)
    # One base at a time in Ceph (each sample removes its own); on disk,
    # Glance's file and the lazy agent's spool.
    bench.ensure_room(2 * size, 2 * size, 'lazy %s' % text)
    first = bench.figure(
        SECTION, 'lazy-first-%d' % size,
        'new raw %s, first disk: %s' % (text, lazy_name(bench)), 's',
        'not lazy')
    published = bench.figure(
        SECTION, 'lazy-published-%d' % size,
        'new raw %s, base published: %s' % (
            text, lazy_name(bench)), 's', 'not lazy')
    sent = bench.figure(
        SECTION, 'lazy-glance-%d' % size,
        'new raw %s, MiB Glance sent: %s' % (
            text, lazy_name(bench)), 'MiB', 'not lazy')
    for rep in range(bench.config.repetitions):
        out = bench.attempt('lazy %s rep %d' % (text, rep + 1),
                            lambda: sample(bench, lazy, size, rep))
        first.samples.append(out['lazy first'])
        first.baseline_samples.append(out['plain first'])
        published.samples.append(out['lazy published'])
        published.baseline_samples.append(out['plain published'])
        sent.samples.append(out['lazy MiB'])
        sent.baseline_samples.append(out['plain MiB'])
        bench.plot_point('first disk, lazy', size, out['lazy first'])
        bench.plot_point('first disk, not lazy', size, out['plain first'])


def sample(bench, lazy, size, rep, what=None):
    out = {}
    what = what or 'rep %d' % (rep + 1)

    def by(agent, label):
        with bench.fresh_image(lambda: ImageData(size), 'raw',
                               'local') as image:
            instance = str(uuid.uuid4())
            bench.instances.add(instance)
            started = time.monotonic()
            try:
                seconds, result, _memory = agent.create(
                    instance, image['id'], disk_gb(size))
                out['%s first' % label] = seconds
                out['%s published' % label] = _published(
                    bench, image['id'], started)
                out['%s MiB' % label] = glance_bytes(
                    bench, image['id']) / MiB
                out['%s steps' % label] = ', '.join(result['timings'])
                if label == 'lazy' and '.imaged-part/' not in \
                        result['parent']:
                    raise RuntimeError('the lazy agent made no lazy disk: '
                                       'its parent is %s' % result['parent'])
            finally:
                agent.delete(instance)
                agent.forget(image['id'])
    alternate(rep, lambda: by(bench.agent, 'plain'),
              lambda: by(lazy, 'lazy'))
    log('lazy %s %s: %s; lazy steps: %s; not lazy: %s',
        size_text(size), what, ', '.join(
            '%s %.2f' % (k, v) for k, v in out.items()
            if isinstance(v, float)), out['lazy steps'], out['plain steps'])
    return out


def _published(bench, image_id, started):
    """Seconds from the call to a published base of ``image_id``."""
    name = '%s_base' % image_id
    deadline = started + PUBLISH_TIMEOUT
    pool = bench.stack['CEPH_VMS_POOL']
    while True:
        with bench.ceph.ioctx(pool) as ioctx:
            if name in bench.ceph.rbd.RBD().list(ioctx):
                return time.monotonic() - started
        if time.monotonic() > deadline:
            raise RuntimeError('base %s not published in %ds' %
                               (name, PUBLISH_TIMEOUT))
        time.sleep(0.05)


def glance_bytes(bench, image_id):
    """Bytes Glance answered ``GET .../file`` of the image with."""
    pattern = re.compile(r'GET /v2/images/%s/file HTTP/[\d.]+" \d+ (\d+)' %
                         image_id)
    with open(bench.glance.access_log, errors='replace') as f:
        return sum(int(m.group(1)) for m in map(pattern.search, f) if m)
