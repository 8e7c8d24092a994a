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

"""Section 8: a storm. N agents on one pool and one broker (distinct
``[DEFAULT] host``), M callers each, released together (a barrier), on one
new image in Glance's file store and on one cloneable image in its Ceph
store; against, in the same repetition, one create alone of a same-size new
image and librbd making as many clones (and resizes) in as many threads.

Also counted: Glance's downloads of the new image (its access log), the
calls that failed and with which error, and agent workers that died.
``Fleet`` and ``percentile`` serve ``tools.bench.soak`` too.
"""

import collections
from concurrent import futures
import contextlib
import copy
import math
import os
import threading
import time
import uuid

import requests

from tests.functional import base
from tools.bench.agent import Agent
from tools.bench.figures import Target
from tools.bench.image_data import ImageData
from tools.bench.progress import describe
from tools.bench.progress import log
from tools.bench.sections import alternate
from tools.bench.sizes import disk_gb
from tools.bench.sizes import GiB
from tools.bench.sizes import MiB
from tools.bench.sizes import size_text

# What a dead worker leaves in its agent's log or stderr.
DEATH_MARKS = ('killed by signal', 'terminate called')
# The options tools.bench.agent gives the run's agent.
AGENT_OPTIONS = {'DEFAULT': {'debug': 'false'}, 'glance': {'num_retries': '3'}}


def percentile(values, q):
    """The nearest-rank ``q``-th percentile of ``values`` (None if empty).
    """
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(1, math.ceil(q / 100 * len(ordered))) - 1]


def latency_text(values):
    if not values:
        return 'no calls'
    return 'p50 %.2f s, p95 %.2f s, max %.2f s (%d calls)' % (
        percentile(values, 50), percentile(values, 95), max(values),
        len(values))


def error_name(error):
    """The error's class, as the caller sees it (oslo.messaging names a
    remote exception ``<Class>_Remote``)."""
    return type(error).__name__.removesuffix('_Remote')


def counts_text(counter):
    return ', '.join('%s x%d' % (k, n) for k, n in sorted(counter.items())) \
        or 'none'


def merged(first, second):
    out = {group: dict(values) for group, values in first.items()}
    for group, values in (second or {}).items():
        out.setdefault(group, {}).update(values)
    return out


class Fleet:
    """Agents on one pool and one broker, each with its own host name.

    ``first`` (an already serving :class:`Agent`) joins as the first one;
    the others are started, and stopped by :meth:`stop`. ``options``: the
    agents' options beside :data:`AGENT_OPTIONS`, or a function of an
    agent's number giving its own.
    """

    def __init__(self, workdir, run_id, count, options=None, first=None):
        self.agents = [first] if first else []
        self.started = []
        for n in range(len(self.agents), count):
            path = os.path.join(workdir, 'fleet-%d' % n)
            os.makedirs(path, exist_ok=True)
            agent = Agent(path, '%s-%d' % (run_id, n))
            own = options(n) if callable(options) else options
            if own:
                agent.daemon = base.Daemon(path, agent.host,
                                           merged(AGENT_OPTIONS, own))
                agent.daemon.core_dumps = True
            self.agents.append(agent)
            self.started.append(agent)

    def view(self, count):
        """The same fleet, its first ``count`` agents only."""
        view = copy.copy(self)
        view.agents = self.agents[:count]
        return view

    def start(self):
        with futures.ThreadPoolExecutor(len(self.started) or 1) as pool:
            list(pool.map(lambda a: a.start(), self.started))

    def stop(self):
        """SIGTERM to the agents this fleet started; SIGKILL after 90 s."""
        with futures.ThreadPoolExecutor(len(self.started) or 1) as pool:
            list(pool.map(lambda a: a.daemon.stop(), self.started))

    def revive(self):
        """Start again the agents whose parent exited. :returns: hosts."""
        dead = [a for a in self.agents
                if a.daemon.process is not None and
                a.daemon.process.poll() is not None]
        for agent in dead:
            log('imaged %s exited with %s; starting it again', agent.host,
                agent.daemon.process.returncode)
            agent.start()
        return [a.host for a in dead]

    def forget(self, image_id):
        for agent in self.agents:
            agent.forget(image_id)

    def marks(self):
        """Where each agent stands: its processes and its logs' lengths."""
        return {a.host: {'parent': a.daemon.process.pid,
                         'worker': a.worker(),
                         'logs': {path: _size(path) for path in _logs(a)}}
                for a in self.agents}

    def deaths(self, since):
        """What died since ``since`` (:meth:`marks`), one line each: a
        parent gone, a worker replaced or gone, a death in a log."""
        found = []
        for agent in self.agents:
            then = since[agent.host]
            process = agent.daemon.process
            if process.pid != then['parent'] or process.poll() is not None:
                found.append('%s: imaged exited (%s)' % (
                    agent.host, process.returncode))
            elif then['worker'] and agent.worker() != then['worker']:
                found.append('%s: worker %d gone (now %s)' % (
                    agent.host, then['worker'], agent.worker()))
            for path in _logs(agent):
                for line in _read_from(path, then['logs'].get(path, 0)):
                    if any(mark in line for mark in DEATH_MARKS):
                        found.append('%s: %s: %s' % (
                            agent.host, os.path.basename(path),
                            line.strip()[-200:]))
        return found


def _logs(agent):
    return (agent.daemon.log_file,
            os.path.join(agent.daemon.workdir, 'stderr.log'))


def _size(path):
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


def _read_from(path, offset):
    try:
        with open(path, errors='replace') as f:
            f.seek(offset)
            return f.readlines()
    except OSError:
        return []


class StormDisks:
    """The disks of one sample, each deleted by the agent that made it
    (librbd's by name), all removed when the block ends."""

    def __init__(self, bench):
        self.bench = bench
        self.instances = []   # (agent, instance_uuid)
        self.baseline = []

    def instance(self, agent):
        instance_uuid = str(uuid.uuid4())
        self.bench.instances.add(instance_uuid)
        self.instances.append((agent, instance_uuid))
        return instance_uuid

    def baseline_name(self):
        name = 'imaged-bench-%s-%s' % (self.bench.run_id,
                                       uuid.uuid4().hex[:8])
        self.bench.baseline_disks.add(name)
        self.baseline.append(name)
        return name

    def remove(self):
        def delete(made):
            agent, instance_uuid = made
            with contextlib.suppress(Exception):
                agent.delete(instance_uuid)
        with futures.ThreadPoolExecutor(8) as pool:
            list(pool.map(delete, self.instances))
        left = self.bench.ceph.remove_matching(
            [i for _a, i in self.instances] + self.baseline)
        if left:
            raise RuntimeError('cannot remove disks %s' % left)


@contextlib.contextmanager
def storm_disks(bench):
    made = StormDisks(bench)
    try:
        yield made
    finally:
        made.remove()


def released_together(calls, answers=None):
    """Run every ``call()`` in its own thread, all released at once.

    :param answers: a list that gets every call's answer.
    :returns: ``(seconds until the last ended, [(seconds, error or None)])``
    """
    barrier = threading.Barrier(len(calls) + 1)
    results = [None] * len(calls)

    def run(n, call):
        barrier.wait()
        started = time.monotonic()
        try:
            answer = call()
            if answers is not None:
                answers.append((time.monotonic() - started, answer))
            error = None
        except Exception as e:
            error = e
        results[n] = (time.monotonic() - started, error)
    threads = [threading.Thread(target=run, args=(n, call), daemon=True)
               for n, call in enumerate(calls)]
    for thread in threads:
        thread.start()
    barrier.wait()
    started = time.monotonic()
    for thread in threads:
        thread.join()
    return time.monotonic() - started, results


def imaged_storm(fleet, made, image_id, size_gb, callers):
    """``callers`` create_root_disk calls on every agent of ``fleet``."""
    ctxt = fleet.agents[0].ctxt

    def create(agent):
        instance_uuid = made.instance(agent)
        return lambda: agent.call('create_root_disk', lambda: (
            agent.api.create_root_disk(ctxt, agent.host, instance_uuid,
                                       image_id, size_gb)))
    answers = []
    total, results = released_together(
        [create(a) for a in fleet.agents for _n in range(callers)], answers)
    return {'total': total, 'parts': call_parts(answers),
            'parents': [(a or {}).get('parent') for _s, a in answers],
            'calls': [s for s, _e in results],
            'errors': collections.Counter(error_name(e)
                                          for _s, e in results if e),
            'first_error': next((describe(e) for _s, e in results if e),
                                None)}


def call_parts(answers):
    """Where each call's time went: ``{part: [seconds per call]}``, from
    the steps the agent timed (``timings``: its locks, Glance, the base's
    build or the wait for it, the clone, the marker's writes, the metadata)
    and, as ``rpc``, what the caller waited beyond them (the broker, the
    agent's queue of long calls, threads)."""
    parts = collections.defaultdict(list)
    for seconds, answer in answers:
        steps = {}
        for step in (answer or {}).get('timings') or []:
            name, _sep, value = step.rpartition(' ')
            with contextlib.suppress(ValueError):
                steps[name] = steps.get(name, 0.0) + float(value.rstrip('s'))
        for name, value in steps.items():
            parts[name].append(value)
        parts['rpc'].append(max(seconds - sum(steps.values()), 0.0))
    return dict(parts)


def parts_text(parts):
    """``part p50/p95 s``, the parts by their p95, largest first."""
    ranked = sorted(parts.items(), key=lambda kv: -percentile(kv[1], 95))
    return ', '.join('%s %.3f/%.3f' % (name, percentile(v, 50),
                                       percentile(v, 95))
                     for name, v in ranked)


def librbd_storm(bench, made, image_id, size_gb, count):
    """The storm's baseline: ``count`` calls in as many threads, each what
    any authorised path pays (one ``GET /v2/images/{id}`` with the caller's
    token) and librbd's clone (and resize) of Glance's snapshot as admin.
    """
    bench.ceph.connect()
    url = '%s/v2/images/%s' % (bench.glance.url.rstrip('/'), image_id)
    headers = bench.glance.auth_headers()
    parts = {'glance': [], 'clone': []}

    def call(name):
        started = time.monotonic()
        with requests.get(url, headers=headers, timeout=60) as resp:
            resp.raise_for_status()
            resp.json()
        read = time.monotonic()
        bench.ceph.clone(image_id, name, size_gb * GiB)
        parts['glance'].append(read - started)
        parts['clone'].append(time.monotonic() - read)
    names = [made.baseline_name() for _n in range(count)]
    total, results = released_together(
        [lambda name=name: call(name) for name in names])
    errors = [e for _s, e in results if e]
    if errors:
        raise errors[0]
    return {'total': total, 'calls': [s for s, _e in results],
            'parts': parts}


def settled_downloads(bench, image_id):
    """Glance logs a request as it ends: count until the count settles."""
    counts = [bench.glance.downloads(image_id)]
    while len(counts) < 3 or counts[-1] != counts[-2]:
        time.sleep(0.3)
        counts.append(bench.glance.downloads(image_id))
    return counts[-1]


def measure(bench):
    cfg = bench.config
    size = cfg.storm_size
    shapes = cfg.storms()
    agents = max(a for a, _c in shapes)
    calls = max(a * c for a, c in shapes)
    bench.ensure_room(2 * size, 4 * size + calls * 4 * MiB, 'storm')
    fleet = Fleet(os.path.join(bench.workdir, 'storm'),
                  '%s-s' % bench.run_id, agents, first=bench.agent)
    clone_image = None
    try:
        started = time.monotonic()
        fleet.start()
        log('storm: %d agents serving (%.1fs to start %d)', agents,
            time.monotonic() - started, len(fleet.started))
        clone_image = bench.attempt(
            'upload for storm', lambda: bench.glance.create(
                lambda: ImageData(size), backend='ceph'), timed=False)
        most = max(c for _a, c in shapes)
        for agents, callers in shapes:
            storm_shape(bench, fleet.view(agents), clone_image, size,
                        callers, callers == most)
    finally:
        if clone_image:
            with contextlib.suppress(Exception):
                bench.forget_image(clone_image['id'])
        fleet.stop()


def storm_shape(bench, fleet, clone_image, size, callers, failures_targeted):
    """Every run (repetition) of one storm: ``callers`` per agent."""
    agents = len(fleet.agents)
    figures = storm_figures(bench, agents, callers, size, failures_targeted)
    pooled = collections.defaultdict(list)
    for rep in range(bench.config.repetitions):
        what = 'storm %dx%d rep %d' % (agents, callers, rep + 1)
        out = bench.attempt(what, lambda: sample(
            bench, fleet, clone_image, size, callers, rep))
        record(figures, out, pooled)
        log('%s: new image %.2fs (%s), cloneable %.2fs (%s), '
            'alone %.2fs, baseline %.2fs; downloads %d; failed %d; '
            'deaths %d%s', what, out['new']['total'],
            counts_text(out['new']['errors']),
            out['clone']['total'],
            counts_text(out['clone']['errors']), out['alone'],
            out['librbd']['total'], out['downloads'],
            figures['failed'].samples[-1], len(out['deaths']),
            ''.join('\n  ' + d for d in out['deaths']))
        for kind in ('new', 'clone', 'librbd'):
            for name, values in out[kind]['parts'].items():
                pooled['%s part %s' % (kind, name)] += values
    for key in ('new', 'clone'):
        figures[key].parts = {
            'imaged per call': pooled[key],
            'baseline per call': pooled['librbd']}
        figures[key].notes.append('per call %s; baseline per call %s'
                                  % (latency_text(pooled[key]),
                                     latency_text(pooled['librbd'])))
    figures['new'].notes.append(
        'one create alone %s s' % ' / '.join(
            '%.2f' % s for s in pooled['alone']))
    for key in ('new', 'clone', 'librbd'):
        prefix = '%s part ' % key
        parts = {k[len(prefix):]: v for k, v in pooled.items()
                 if k.startswith(prefix)}
        if parts:
            text = parts_text(parts)
            figure = figures.get(key, figures['clone'])
            figure.notes.append('where %s call\'s time went, p50/p95 s: '
                                '%s' % ('a baseline' if key == 'librbd'
                                        else 'a', text))
            log('storm %dx%d %s: where a call\'s time went (p50/p95 s): %s',
                agents, callers, key, text)
    figures['deaths'].notes.append(
        'runs with a death: %d of %d' % (
            sum(1 for n in figures['deaths'].samples if n),
            len(figures['deaths'].samples)))


def storm_figures(bench, agents, callers, size, failures_targeted):
    text = '%d agents x %d callers, %s' % (agents, callers, size_text(size))
    # One figure per storm: 6x16 and 12x16 are measured apart.
    shape = '%dx%d' % (agents, callers)
    calls = agents * callers
    return {
        'new': bench.figure(
            8, 'storm-new-%s' % shape, 'storm %s new image: all done' %
            text, 's', 'one create alone + baseline storm',
            Target('<=', 1.5, '<= 1.5x')),
        'clone': bench.figure(
            8, 'storm-clone-%s' % shape, 'storm %s cloneable: all done' %
            text, 's', 'baseline storm: Glance GET + librbd clone + '
            'resize, %d threads' % calls, Target('<=', 1.2, '<= 1.2x')),
        'downloads': bench.figure(
            8, 'storm-downloads-%s' % shape, 'storm %s new image: '
            'downloads (worst)' % text, 'downloads', 'ideal',
            Target('<=', 1, '1 download', on='value'), summary='max'),
        'failed': bench.figure(
            8, 'storm-failed-%s' % shape, 'storm %s: failed calls of %d '
            '(worst)' % (text, 2 * calls), 'calls', 'ideal',
            Target('<=', 0, '0 failed', on='value') if failures_targeted
            else None, summary='max'),
        'deaths': bench.figure(
            8, 'storm-deaths-%s' % shape, 'storm %s: agent deaths' % text,
            'deaths', 'ideal', Target('<=', 0, '0 deaths', on='value'),
            summary='max')}


def record(figures, out, pooled):
    figures['new'].samples.append(out['new']['total'])
    figures['new'].baseline_samples.append(out['alone'] +
                                           out['librbd']['total'])
    figures['clone'].samples.append(out['clone']['total'])
    figures['clone'].baseline_samples.append(out['librbd']['total'])
    figures['downloads'].samples.append(out['downloads'])
    figures['downloads'].baseline_samples.append(1)
    errors = out['new']['errors'] + out['clone']['errors']
    figures['failed'].samples.append(sum(errors.values()))
    figures['failed'].baseline_samples.append(0)
    figures['deaths'].samples.append(len(out['deaths']))
    figures['deaths'].baseline_samples.append(0)
    for kind in ('new', 'clone'):
        if out[kind]['errors']:
            figures['failed'].notes.append('%s image: %s (first: %s)' % (
                kind, counts_text(out[kind]['errors']),
                out[kind]['first_error']))
    figures['deaths'].notes.extend(out['deaths'])
    if out['revived']:
        figures['deaths'].notes.append('started again before a sample: %s'
                                       % ', '.join(out['revived']))
    if out['clone_downloads']:
        figures['downloads'].notes.append(
            'the cloneable image was downloaded %d times' %
            out['clone_downloads'])
    pooled['new'] += out['new']['calls']
    pooled['clone'] += out['clone']['calls']
    pooled['librbd'] += out['librbd']['calls']
    pooled['alone'].append(out['alone'])


def sample(bench, fleet, clone_image, size, callers, rep):
    size_gb, out = disk_gb(size), {'revived': fleet.revive()}
    clone_before = bench.glance.downloads(clone_image['id'])
    with bench.fresh_image(lambda: ImageData(size)) as new, \
            bench.fresh_image(lambda: ImageData(size)) as single, \
            storm_disks(bench) as made:
        since = fleet.marks()

        def new_storm():
            out['new'] = imaged_storm(fleet, made, new['id'], size_gb,
                                      callers)

        def clone_storm():
            out['clone'] = imaged_storm(fleet, made, clone_image['id'],
                                        size_gb, callers)

        def alone():
            agent = fleet.agents[0]
            instance_uuid = made.instance(agent)
            started = time.monotonic()
            agent.call('create_root_disk', lambda: agent.api.create_root_disk(
                agent.ctxt, agent.host, instance_uuid, single['id'],
                size_gb))
            out['alone'] = time.monotonic() - started

        def librbd():
            out['librbd'] = librbd_storm(bench, made, clone_image['id'],
                                         size_gb,
                                         len(fleet.agents) * callers)
        alternate(rep, new_storm, alone, clone_storm, librbd)
        out['downloads'] = settled_downloads(bench, new['id'])
        out['clone_downloads'] = settled_downloads(
            bench, clone_image['id']) - clone_before
        out['deaths'] = fleet.deaths(since)
        fleet.forget(new['id'])
        fleet.forget(single['id'])
    return out
