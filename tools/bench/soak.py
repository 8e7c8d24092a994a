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

"""``python -m tools.bench.soak``: a fleet under a steady mix of calls.

Agents on the stack's ``vms`` pool and broker, their cleanup task every
2 s with small minimum ages, take creates (each disk's first and last MiB
of image data and its last MiB checked with librbd as admin), deletes and
``cache_images`` from several caller threads each, on a few images (raw in
Glance's Ceph store: clones; raw and qcow2 in its file store: downloads),
while the Ceph OSD is stopped and started again in the middle.

Requirements, checked at the end (exit 1 when one fails):

* no lost call: every call ends ``ok`` or with an imaged exception (a
  typed failure, counted by class; expected while the OSD is down); a
  ``MessagingTimeout`` or any other error is lost;
* no worker death: each agent's parent and worker processes are the same
  throughout, and no agent's log or stderr says "killed by signal" or
  "terminate called";
* every disk's bytes right;
* nothing leaked: once every disk was deleted and the images deleted from
  Glance, and the agents' cleanup has had time to sweep, the ``vms`` pool
  holds no image whose name has a soak instance's or image's id (disks,
  ``<image>_base``, ``.imaged-part`` partials) and no agent's cache
  (``state/_base``) a file named after a soak image.
"""

import argparse
import collections
import contextlib
import datetime
import json
import os
import random
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
import uuid

from imaged import exception
from tests.functional import base
import tools.bench  # noqa: F401  (imaged.cmd first)
from tools.bench.ceph import AdminCeph
from tools.bench.config import REPO
from tools.bench.glance import GlanceImages
from tools.bench.image_data import ImageData
from tools.bench.image_data import ImageFile
from tools.bench.machine import source_facts
from tools.bench.progress import describe
from tools.bench.progress import log
from tools.bench.sections.storm import counts_text
from tools.bench.sections.storm import DEATH_MARKS
from tools.bench.sections.storm import error_name
from tools.bench.sections.storm import Fleet
from tools.bench.sections.storm import percentile
from tools.bench.sizes import GiB
from tools.bench.sizes import MiB

STACK_SH = os.path.join(REPO, 'tools', 'stack.sh')
DISK_GB = 1
OPS = ('create', 'delete', 'precache')


def parse_args(argv):
    parser = argparse.ArgumentParser(
        prog='python -m tools.bench.soak',
        description='A fleet of imaged agents under a steady mix of calls, '
        'an OSD restart in the middle; exits 1 when a requirement fails.')
    parser.add_argument('--minutes', type=float, default=1.0,
                        help='how long the calls go on (default 1)')
    parser.add_argument('--agents', type=int, default=6)
    parser.add_argument('--callers', type=int, default=2,
                        help='caller threads per agent (default 2)')
    parser.add_argument('--size', type=int, default=16,
                        help="each image's size in MiB (default 16)")
    parser.add_argument('--osd-outage', type=float, default=8,
                        help='seconds the OSD stays stopped in the middle '
                        '(0: no restart; default 8)')
    parser.add_argument('--base-lock-duration', type=int, default=20,
                        help="the agents' [rbd] base_lock_duration, also "
                        'the youngest age at which a base is removed '
                        '(default 20; imaged: 60)')
    parser.add_argument('--pool-cleanup', default='always',
                        choices=('always', 'elect'),
                        help="the agents' [image_cache] pool_cleanup: "
                             "always (every agent cleans the pool, racing "
                             "the others' clones; a role held by another "
                             "agent of the pool, such as the quick start's, "
                             "does not matter) or elect (one at a time)")
    parser.add_argument('--sweep-timeout', type=float, default=120,
                        help='seconds to wait, at the end, for the '
                        "agents' cleanup to remove the bases and partials")
    parser.add_argument('--imaged-tree', metavar='DIR',
                        help='run the agents from this source tree (e.g. '
                        'a git worktree of a commit)')
    parser.add_argument('--seed', type=int, default=None)
    parser.add_argument('--json', default='bench-results/soak.json',
                        help='where to write the calls and the summary')
    args = parser.parse_args(argv)
    if args.agents < 1 or args.callers < 1 or args.size < 2:
        parser.error('--agents and --callers at least 1, --size at least 2')
    return args


class SoakData(ImageData):
    """ImageData whose every MiB also carries a salt: the soak's images
    differ, so a disk made from the wrong one cannot pass."""

    def __init__(self, size, salt):
        super().__init__(size)
        self.salt = salt

    def mib(self, index):
        return struct.pack('<QQ', index, self.salt) + self._random[16:]


class SoakImage:
    """One Glance image of the soak and the bytes its disks must hold."""

    def __init__(self, kind, image, size, salt):
        self.kind, self.id, self.size = kind, image['id'], size
        data = SoakData(size, salt)
        self.first, self.last = data.mib(0), data.mib(size // MiB - 1)


class Calls:
    """Every call's record, kept from several threads."""

    def __init__(self):
        self.started = time.monotonic()
        self.records = []
        self.lock = threading.Lock()

    def run(self, agent, op, image_kind, call):
        """``call()`` on ``agent``; :returns: its result or None."""
        started = time.monotonic()
        record = {'at': round(started - self.started, 2), 'op': op,
                  'host': agent.host, 'image': image_kind}
        try:
            result = agent.call(op, call)
            record['outcome'] = 'ok'
        except exception.ImagedException as e:
            result = None
            record['outcome'] = 'typed'
            record['error'] = error_name(e)
            record['detail'] = describe(e)
        except Exception as e:  # MessagingTimeout, WorkerDied, untyped
            result = None
            record['outcome'] = 'lost'
            record['error'] = error_name(e)
            record['detail'] = describe(e)
        record['seconds'] = round(time.monotonic() - started, 3)
        record['ended'] = round(time.monotonic() - self.started, 2)
        with self.lock:
            self.records.append(record)
        return record, result


class Soak:

    def __init__(self, args, workdir, run_id):
        self.args = args
        self.run_id = run_id
        self.stack = base.stack()
        self.ceph = AdminCeph(self.stack)
        self.glance = GlanceImages(self.stack, 'soak-%s' % run_id)
        self.fleet = Fleet(workdir, 'soak-%s' % run_id, args.agents, {
            'image_cache': {'manager_interval': '2',
                            'remove_unused_base_images_min_age': '1',
                            'rbd_base_min_age': '0',
                            'pool_cleanup': args.pool_cleanup},
            'rbd': {'base_lock_duration': str(args.base_lock_duration)}})
        self.workdir = workdir
        self.images = []
        self.calls = Calls()
        self.instances = {}        # instance_uuid: agent, for every create
        self.deleted = set()
        self.checks = collections.Counter()  # right, wrong, unverified
        self.wrong = []
        self.deaths = []
        self.outage = None         # (stopped at, started at), soak seconds
        self.osd_stopped = False
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.osd_error = None
        self.seed = random.randrange(1 << 30) if args.seed is None \
            else args.seed

    # -- set-up ------------------------------------------------------------

    def upload(self):
        size = self.args.size * MiB
        for salt, (kind, fmt, backend) in enumerate((
                ('clone raw', 'raw', 'ceph'), ('download raw', 'raw', 'local'),
                ('download qcow2', 'qcow2', 'local')), start=1):
            if fmt == 'raw':
                image = self.glance.create(lambda: SoakData(size, salt),
                                           fmt, backend)
            else:
                raw = os.path.join(self.workdir, 'soak.raw')
                qcow2 = os.path.join(self.workdir, 'soak.qcow2')
                SoakData(size, salt).write_sparse(raw)
                subprocess.run(['qemu-img', 'convert', '-f', 'raw', '-O',
                                'qcow2', raw, qcow2], check=True,
                               capture_output=True)
                image = self.glance.create(lambda: ImageFile(qcow2), fmt,
                                           backend)
            self.images.append(SoakImage(kind, image, size, salt))

    # -- the calls -----------------------------------------------------------

    def caller(self, agent, seed, deadline):
        rng = random.Random(seed)
        disks = []
        while time.monotonic() < deadline and not self.stop.is_set():
            ctxt = agent.ctxt  # the demo user's current token
            roll = rng.random()
            if disks and (len(disks) >= 3 or roll < 0.35):
                self.delete(agent, ctxt, disks.pop(rng.randrange(len(disks))))
            elif roll < 0.55:
                chosen = rng.sample(self.images, rng.randint(1, 2))
                record, result = self.calls.run(
                    agent, 'precache', '+'.join(i.kind for i in chosen),
                    lambda: agent.api.cache_images(
                        ctxt, agent.host, [i.id for i in chosen]))
                failed = sorted(k for k, v in (result or {}).items()
                                if v == 'error')
                if failed:
                    record.update(outcome='typed', error='precache error',
                                  detail='error for %s' % ', '.join(failed))
            else:
                image = rng.choice(self.images)
                instance_uuid = str(uuid.uuid4())
                with self.lock:
                    self.instances[instance_uuid] = agent
                record, result = self.calls.run(
                    agent, 'create', image.kind,
                    lambda: agent.api.create_root_disk(
                        ctxt, agent.host, instance_uuid, image.id, DISK_GB))
                if result:
                    disks.append((instance_uuid, image.kind))
                    self.verify(result, image)
            time.sleep(rng.uniform(0, 0.3))
        for disk in disks:
            self.delete(agent, agent.ctxt, disk)

    def delete(self, agent, ctxt, disk):
        instance_uuid, kind = disk
        record, _result = self.calls.run(
            agent, 'delete', kind, lambda: agent.api.delete_root_disk(
                ctxt, agent.host, instance_uuid))
        if record['outcome'] == 'ok':
            with self.lock:
                self.deleted.add(instance_uuid)

    def verify(self, result, image):
        """The disk's first and last MiB of image data, and its last MiB
        (beyond the image: zeros), read as admin; retried while Ceph is
        out."""
        wanted = ((0, image.first), (image.size - MiB, image.last),
                  (DISK_GB * GiB - MiB, bytes(MiB)))
        for attempt in range(4):
            try:
                with self.ceph.ioctx(result['pool']) as ioctx, \
                        self.ceph.rbd.Image(ioctx, result['name'],
                                            read_only=True) as disk:
                    got = [disk.read(offset, len(data)) == data
                           for offset, data in wanted]
                break
            except Exception as e:
                error = e
                time.sleep(5)
        else:
            log('could not read %s: %s', result['name'], describe(error))
            self.checks['unverified'] += 1
            return
        if all(got):
            self.checks['right'] += 1
        else:
            self.checks['wrong'] += 1
            self.wrong.append('%s (%s, image %s): first/last/end %s' % (
                result['name'], image.kind, image.id, got))

    # -- the OSD restart and the watch ---------------------------------------

    def restart_osd(self, at):
        if self.stop.wait(max(0, at - time.monotonic())):
            return
        stopped = time.monotonic() - self.calls.started
        log('stopping the Ceph OSD for %.0f s', self.args.osd_outage)
        self.osd_stopped = True
        try:
            stack_sh('stop', 'ceph-osd')
            self.stop.wait(self.args.osd_outage)
            stack_sh('start', 'ceph-osd')
        except Exception as e:
            self.osd_error = describe(e)
            log('the OSD restart failed: %s', self.osd_error)
            return
        self.osd_stopped = False
        self.outage = (stopped, time.monotonic() - self.calls.started)
        log('the Ceph OSD is up again (%.1f s after it was stopped)',
            self.outage[1] - self.outage[0])

    def watch(self, since):
        """Each second: is every agent's parent and worker the same?"""
        seen = set()
        while not self.stop.wait(1):
            for line in self.fleet.deaths(since):
                if line not in seen:
                    seen.add(line)
                    log('DEATH %s', line)
                    self.deaths.append(line)

    # -- the run -------------------------------------------------------------

    def run(self):
        self.ceph.connect()
        log('uploading %d images of %d MiB', 3, self.args.size)
        self.upload()
        started = time.monotonic()
        self.fleet.start()
        log('%d agents serving (%.1f s)', len(self.fleet.agents),
            time.monotonic() - started)
        since = self.fleet.marks()
        self.calls.started = time.monotonic()
        deadline = self.calls.started + self.args.minutes * 60
        threads = [threading.Thread(target=self.watch, args=(since,),
                                    daemon=True)]
        if self.args.osd_outage > 0:
            threads.append(threading.Thread(
                target=self.restart_osd, daemon=True,
                args=(self.calls.started + self.args.minutes * 30 -
                      self.args.osd_outage / 2,)))
        callers = [threading.Thread(target=self.caller, daemon=True,
                                    args=(agent, self.seed + n * 1000 + c,
                                          deadline))
                   for n, agent in enumerate(self.fleet.agents)
                   for c in range(self.args.callers)]
        for thread in threads + callers:
            thread.start()
        log('%d callers on %d agents for %.1f min', len(callers),
            len(self.fleet.agents), self.args.minutes)
        for thread in callers + threads[1:]:
            while thread.is_alive():
                thread.join(1)
        log('calls done: %d', len(self.calls.records))
        self.deaths_at_end = self.fleet.deaths(since)
        for line in self.deaths_at_end:
            if line not in self.deaths:
                self.deaths.append(line)
        self.stop.set()
        return self.leaks()

    def leaks(self):
        """Delete what is left, then what the sweep did not remove."""
        left = self.instances.keys() - self.deleted
        for instance_uuid in sorted(left):  # lost or failed creates
            agent = self.instances[instance_uuid]
            with contextlib.suppress(Exception):
                agent.delete(instance_uuid)
        for image in self.images:
            self.glance.delete(image.id)
        ids = [i.id for i in self.images]
        # A create that failed while Ceph was out may leave its partial
        # image to the agent's next sweep of what it left (every 30 s).
        log('waiting up to %.0f s for the agents to remove the bases and '
            'the partial images', self.args.sweep_timeout)
        deadline = time.monotonic() + self.args.sweep_timeout
        while True:
            disks = self.vms_names(self.instances)
            bases = self.vms_names(ids)
            files = self.state_files(ids)
            if not (disks or bases or files) or \
                    time.monotonic() > deadline:
                break
            time.sleep(2)
        return {'disks': disks, 'rbd': bases, 'files': files,
                'swept_in': round(self.args.sweep_timeout -
                                  (deadline - time.monotonic()), 1)}

    def vms_names(self, words):
        with self.ceph.ioctx(self.ceph.vms) as ioctx:
            return sorted(n for n in self.ceph.rbd.RBD().list(ioctx)
                          if any(w in n for w in words))

    def state_files(self, ids):
        """Files of the images in the agents' caches (their lock files,
        a few bytes each under ``state/lock``, are not counted)."""
        found = []
        for agent in self.fleet.agents:
            cache = os.path.join(agent.daemon.state_path, '_base')
            for top, dirs, files in os.walk(cache):
                found += [os.path.join(top, n) for n in files + dirs
                          if any(i in n for i in ids)]
        return found

    def cleanup(self):
        """Whatever happened: the OSD up, agents stopped, nothing left."""
        self.stop.set()
        if self.osd_stopped:
            stack_sh('start', 'ceph-osd')
        self.fleet.stop()
        left = []
        try:
            left = self.ceph.remove_matching(
                list(self.instances) + [i.id for i in self.images])
        except Exception as e:
            left = ['RBD images (%s)' % describe(e)]
        for image_id in list(self.glance.ids):
            try:
                self.glance.delete(image_id)
            except Exception as e:
                left.append('Glance image %s (%s)' % (image_id, describe(e)))
        self.ceph.close()
        return left


def stack_sh(*args):
    subprocess.run([STACK_SH] + list(args), check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                   timeout=900)


def log_deaths(fleet):
    """Death marks anywhere in the agents' logs (also at shutdown)."""
    found = []
    for agent in fleet.agents:
        for name in ('imaged.log', 'stderr.log'):
            path = os.path.join(agent.daemon.workdir, name)
            with contextlib.suppress(OSError), open(path,
                                                    errors='replace') as f:
                found += ['%s: %s: %s' % (agent.host, name, line.strip())
                          for line in f
                          if any(m in line for m in DEATH_MARKS)]
    return found


def base_removals(fleet):
    return sum(a.daemon.log().count('Removed base image')
               for a in fleet.agents)


def summarize(soak, leaks, shutdown_deaths, removals, seconds):
    records = soak.calls.records
    lines = ['imaged soak: %d agents x %d callers, %.1f min of calls, '
             'images of %d MiB: %s; took %.0f s' % (
                 len(soak.fleet.agents), soak.args.callers,
                 soak.args.minutes, soak.args.size,
                 ', '.join(i.kind for i in soak.images), seconds)]
    if soak.outage:
        lines.append('OSD stopped at %.1f s, started again at %.1f s' %
                     soak.outage)
    elif soak.args.osd_outage > 0:
        lines.append('the OSD was not restarted (%s)' % (
            soak.osd_error or 'the run ended first'))
    rows = [('call', 'calls', 'ok', 'typed', 'lost', 'p50', 'p95', 'max')]
    for op in OPS:
        mine = [r for r in records if r['op'] == op]
        ok = [r['seconds'] for r in mine if r['outcome'] == 'ok']
        rows.append((op, str(len(mine)), str(len(ok))) + tuple(
            str(sum(1 for r in mine if r['outcome'] == o))
            for o in ('typed', 'lost')) + tuple(
            '%.2f s' % v if v is not None else '-' for v in (
                percentile(ok, 50), percentile(ok, 95),
                max(ok) if ok else None)))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines += ['  '.join(c.rjust(w) if i else c.ljust(w)
                        for i, (c, w) in enumerate(zip(row, widths)))
              for row in rows]
    lines.append('(latencies of the ok calls)')

    def during(r):
        return soak.outage and r['ended'] >= soak.outage[0] and \
            r['at'] <= soak.outage[1] + 30
    typed = [r for r in records if r['outcome'] == 'typed']
    lost = [r for r in records if r['outcome'] == 'lost']
    lines.append('typed failures during the outage (+30 s): %s' % counts_text(
        collections.Counter('%s %s' % (r['op'], r['error'])
                            for r in typed if during(r))))
    lines.append('typed failures outside it: %s' % counts_text(
        collections.Counter('%s %s' % (r['op'], r['error'])
                            for r in typed if not during(r))))
    lines.append('lost calls: %s' % counts_text(collections.Counter(
        '%s %s' % (r['op'], r['error']) for r in lost)))
    lines += ['  %.1fs %s %s %s: %s' % (
        r['at'], r['host'], r['op'], r['image'], r['detail'])
              for r in (lost + [r for r in typed if not during(r)])[:12]]
    lines.append('disks checked: %d right, %d wrong, %d unverified' % (
        soak.checks['right'], soak.checks['wrong'],
        soak.checks['unverified']))
    lines += ['  WRONG %s' % w for w in soak.wrong]
    lines.append("bases removed by the agents' cleanup: %d" % removals)
    lines.append('downloads from Glance: %s' % ', '.join(
        '%s %d' % (i.kind, soak.glance.downloads(i.id))
        for i in soak.images))
    lines.append('worker deaths: %s' % ('; '.join(soak.deaths) or 'none'))
    at_shutdown = [d for d in shutdown_deaths if not any(
        d.split(': ', 2)[-1] in x for x in soak.deaths)]
    if at_shutdown:
        lines.append('death marks written at shutdown: %s' %
                     '; '.join(at_shutdown))
    lines.append('leaks: disks %s; RBD images of the images %s; state '
                 'files %s (swept in %.1f s)' % (
                     leaks['disks'] or 'none', leaks['rbd'] or 'none',
                     leaks['files'] or 'none', leaks['swept_in']))
    requirements = {
        '0 lost calls': not lost,
        '0 worker deaths': not soak.deaths and not shutdown_deaths,
        "every disk's bytes right": soak.checks['wrong'] == 0 and
        soak.checks['right'] > 0,
        'nothing leaked': not (leaks['disks'] or leaks['rbd'] or
                               leaks['files']),
        'the OSD restarted': soak.outage is not None or
        soak.args.osd_outage <= 0}
    lines.append('requirements: %s' % '; '.join(
        '%s %s' % (k, 'met' if v else 'FAILED')
        for k, v in requirements.items()))
    return '\n'.join(lines), all(requirements.values())


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.imaged_tree:
        os.environ['PYTHONPATH'] = os.pathsep.join(
            [os.path.abspath(args.imaged_tree)] +
            [p for p in [os.environ.get('PYTHONPATH')] if p])
    signal.signal(signal.SIGTERM, lambda *_a: sys.exit(143))
    base.configure_client()
    base.CONF.set_override('long_rpc_timeout', 300)
    run_id = uuid.uuid4().hex[:8]
    date = datetime.datetime.now(datetime.timezone.utc).isoformat(
        timespec='seconds')
    workdir = tempfile.mkdtemp(prefix='imaged-soak-', dir='/var/tmp')
    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    started = time.monotonic()
    soak, leaks, error = Soak(args, workdir, run_id), None, None
    try:
        leaks = soak.run()
    except (KeyboardInterrupt, SystemExit) as e:
        error = 'interrupted (%s)' % type(e).__name__
    except Exception as e:
        error = describe(e)
        log('the soak could not run: %s', error)
    finally:
        log('cleaning up')
        not_removed = soak.cleanup()
        shutdown_deaths = log_deaths(soak.fleet)
        removals = base_removals(soak.fleet)
        prefix = os.path.splitext(args.json)[0]
        for agent in soak.fleet.agents:  # for a post mortem
            for name in ('imaged.log', 'stderr.log'):
                with contextlib.suppress(OSError):
                    shutil.copy(os.path.join(agent.daemon.workdir, name),
                                '%s-%s-%s' % (prefix, agent.host, name))
        shutil.rmtree(workdir, ignore_errors=True)
    leaks = leaks or {'disks': [], 'rbd': [], 'files': [], 'swept_in': 0}
    source = source_facts(os.path.abspath(args.imaged_tree or REPO))
    text, met = summarize(soak, leaks, shutdown_deaths, removals,
                          time.monotonic() - started)
    text = 'imaged: %s at %s%s\n%s' % (
        source['tree'], source['commit'], ' + uncommitted changes in '
        'imaged/' if source['uncommitted'] else '', text)
    if error:
        text += '\nFAILED: %s' % error
    if not_removed:
        text += '\nnot removed at the end: %s' % ', '.join(not_removed)
    with open(args.json, 'w') as f:
        json.dump({'date': date, 'args': vars(args), 'seed': soak.seed,
                   'imaged': source,
                   'summary': text,
                   'outage': soak.outage, 'calls': soak.calls.records,
                   'leaks': leaks, 'deaths': soak.deaths,
                   'shutdown_deaths': shutdown_deaths,
                   'wrong': soak.wrong}, f, indent=1)
    print(text)
    print('\ncalls and summary: %s; agent logs beside it' % args.json)
    return 0 if met and not error and not not_removed else 1


if __name__ == '__main__':
    sys.exit(main())
