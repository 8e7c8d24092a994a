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

"""Section 10 too (issue 29): the storm of a new image with lazy on.

Two fleets of ``lazy_storm`` agents (hosts) on the pool, in the same run:
one with ``[image_cache] lazy_first_disk = True`` (each agent its own
``lazy_source_port``), and the baseline, the same storm with lazy off
(the run's own agent and others). Each repetition releases every caller
of each fleet together on a new raw image of the file store of its own
(same size, fresh bytes): the p50 and the max seconds per call, the calls
failed or lost (no answer), the worker deaths, and the MiB Glance sent for
the image (its access log): one image's worth, whatever the fleet.
"""

from concurrent import futures
import os

from tests.functional import base
from tools.bench.figures import Target
from tools.bench.image_data import ImageData
from tools.bench.progress import log
from tools.bench.sections import alternate
from tools.bench.sections import lazy
from tools.bench.sections import storm
from tools.bench.sizes import disk_gb
from tools.bench.sizes import MiB
from tools.bench.sizes import size_text

SECTION = 10
# What a caller whose call was lost gets (no answer in the call timeout).
LOST = 'MessagingTimeout'
# Glance's access log counts a response's headers with its body.
HEADERS = 64 * 1024


def measure(bench):
    agents, callers = bench.config.lazy_storm
    size = bench.config.storm_size
    calls = agents * callers
    bench.ensure_room(2 * size, 4 * size + 2 * calls * 4 * MiB,
                      'lazy storm')
    workdir = os.path.join(bench.workdir, 'lazy-storm')
    fleets = {
        'plain': storm.Fleet(os.path.join(workdir, 'plain'),
                             '%s-lp' % bench.run_id, agents,
                             first=bench.agent),
        'lazy': storm.Fleet(os.path.join(workdir, 'lazy'),
                            '%s-ll' % bench.run_id, agents,
                            options=lambda _n: {'image_cache': dict(
                                lazy.lazy_options(bench),
                                lazy_source_port=str(base.free_port()))})}
    try:
        with futures.ThreadPoolExecutor(2) as pool:
            list(pool.map(lambda f: f.start(), fleets.values()))
        log('lazy storm: %d agents serving with lazy_first_disk, %d '
            'without', agents, agents)
        figures = _figures(bench, agents, callers, size)
        for rep in range(bench.config.repetitions):
            what = 'lazy storm %dx%d rep %d' % (agents, callers, rep + 1)
            out = bench.attempt(what, lambda: sample(
                bench, fleets, size, callers, rep))
            _record(figures, out)
            log('%s: %s', what, '; '.join(
                '%s: p50 %.2f s, max %.2f s, failed %d (%s), deaths %d, '
                'Glance %.0f MiB in %d downloads, %d lazy disks' % (
                    label, storm.percentile(o['calls'], 50),
                    max(o['calls']), sum(o['errors'].values()),
                    storm.counts_text(o['errors']), len(o['deaths']),
                    o['MiB'], o['downloads'], o['lazy disks'])
                for label, o in out.items()))
    finally:
        for fleet in fleets.values():
            fleet.stop()


def sample(bench, fleets, size, callers, rep):
    out = {}

    def run(label):
        fleet = fleets[label]
        since = fleet.marks()
        with bench.fresh_image(lambda: ImageData(size)) as image, \
                storm.storm_disks(bench) as made:
            result = storm.imaged_storm(fleet, made, image['id'],
                                        disk_gb(size), callers)
            result['downloads'] = storm.settled_downloads(bench,
                                                          image['id'])
            result['MiB'] = lazy.glance_bytes(bench, image['id']) / MiB
            result['deaths'] = fleet.deaths(since)
            result['lazy disks'] = sum(
                1 for p in result['parents'] if p and '.imaged-part/' in p)
            fleet.forget(image['id'])
        if label == 'lazy' and not result['lazy disks'] and \
                not result['errors']:
            raise RuntimeError('the lazy fleet made no lazy disk: its '
                               'disks\' parents are %s' %
                               sorted(set(result['parents'])))
        out[label] = result
    alternate(rep, lambda: run('plain'), lambda: run('lazy'))
    return out


def _figures(bench, agents, callers, size):
    text = '%dx%d new raw %s' % (agents, callers, size_text(size))
    shape = '%dx%d' % (agents, callers)
    calls = agents * callers
    name = lazy.lazy_name(bench)
    return {
        'p50': bench.figure(
            SECTION, 'lazy-storm-p50-%s' % shape,
            'storm %s, p50 per call: %s' % (text, name), 's', 'not lazy'),
        'max': bench.figure(
            SECTION, 'lazy-storm-max-%s' % shape,
            'storm %s, max per call: %s' % (text, name), 's', 'not lazy'),
        'failed': bench.figure(
            SECTION, 'lazy-storm-failed-%s' % shape,
            'storm %s, calls failed or lost of %d: %s' % (
                text, calls, name),
            'calls', 'not lazy', Target('<=', 0, '0 failed', on='value'),
            summary='max'),
        'deaths': bench.figure(
            SECTION, 'lazy-storm-deaths-%s' % shape,
            'storm %s, worker deaths: %s' % (text, name), 'deaths', 'not lazy',
            Target('<=', 0, '0 deaths', on='value'), summary='max'),
        'MiB': bench.figure(
            SECTION, 'lazy-storm-glance-%s' % shape,
            'storm %s, MiB Glance sent: %s' % (text, name), 'MiB', 'not lazy',
            Target('<=', (size + HEADERS) / MiB, 'one image, %s' %
                   size_text(size), on='value'), summary='max')}


def _record(figures, out):
    lazy_out, plain = out['lazy'], out['plain']
    for key, of in (('p50', lambda o: storm.percentile(o['calls'], 50)),
                    ('max', lambda o: max(o['calls'])),
                    ('failed', lambda o: sum(o['errors'].values())),
                    ('deaths', lambda o: len(o['deaths'])),
                    ('MiB', lambda o: o['MiB'])):
        figures[key].samples.append(of(lazy_out))
        figures[key].baseline_samples.append(of(plain))
    for label, o in (('lazy', lazy_out), ('not lazy', plain)):
        if o['errors']:
            figures['failed'].notes.append('%s: %s, lost %d (first: %s)' % (
                label, storm.counts_text(o['errors']), o['errors'][LOST],
                o['first_error']))
        figures['deaths'].notes.extend('%s: %s' % (label, d)
                                       for d in o['deaths'])
        figures['MiB'].notes.append('%s: %d downloads' % (
            label, o['downloads']))
    figures['p50'].notes.append('lazy disks: %d' % lazy_out['lazy disks'])
