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

"""The benchmark's run: samples with their retries, what they make and
remove, the sections in turn, and the cleanup at the end."""

from concurrent import futures
import contextlib
import os
import shutil
import signal
import subprocess
import time
import traceback
import uuid

from tests.functional import base
from tools.bench.agent import Agent
from tools.bench.baselines import EchoServer
from tools.bench.ceph import AdminCeph
from tools.bench.figures import Figure
from tools.bench.figures import Target
from tools.bench.glance import GlanceImages
from tools.bench.machine import stack_services
from tools.bench.progress import describe
from tools.bench.progress import log
from tools.bench.sections import clone
from tools.bench.sections import dedup
from tools.bench.sections import download
from tools.bench.sections import lazy
from tools.bench.sections import lazy_storm
from tools.bench.sections import memory
from tools.bench.sections import qcow2
from tools.bench.sections import rpc
from tools.bench.sections import signatures
from tools.bench.sections import sparse
from tools.bench.sections import storm
from tools.bench.sizes import GiB
from tools.bench.sizes import size_text

# Each section, in the order a run measures them.
MEASURES = {'rpc': rpc.measure, 'clone': clone.measure,
            'download': download.measure, 'sparse': sparse.measure,
            'qcow2': qcow2.measure, 'dedup': dedup.measure,
            'memory': memory.measure, 'signatures': signatures.measure,
            'storm': storm.measure, 'lazy': lazy.measure,
            'lazy_storm': lazy_storm.measure}
SECTIONS = tuple(MEASURES)
# What --quick (CI) leaves out unless --only names it: two fleets of agents
# to start, ~25 s on 2 busy CPUs even at 2x4.
NOT_QUICK = ('lazy_storm',)


class SampleFailed(Exception):
    pass


class StackDisturbed(Exception):
    pass


class NoRoom(Exception):
    pass


class Bench:

    def __init__(self, config, workdir, run_id):
        self.config = config
        self.workdir = workdir
        self.nproc = len(os.sched_getaffinity(0))
        self.run_id = run_id
        self.stack = base.stack()
        self.ceph = AdminCeph(self.stack)
        self.glance = GlanceImages(self.stack, run_id)
        os.makedirs(os.path.join(workdir, 'imaged'))
        self.agent = Agent(os.path.join(workdir, 'imaged'), run_id)
        self.echo = None
        self.figures = {}
        self.series = {}
        self.instances = set()
        self.baseline_disks = set()
        self.retries, self.errors, self.skipped = [], [], []

    def figure(self, section, key, *args, **kwargs):
        if key not in self.figures:
            self.figures[key] = Figure(section, key, *args, **kwargs)
        return self.figures[key]

    def plot_point(self, series, size, value):
        self.series.setdefault(series, {}).setdefault(size, []).append(value)

    # -- robustness ----------------------------------------------------------

    def attempt(self, what, func, timed=True):
        """Run one sample; if it fails, wait for the stack and retry once.

        A timed sample during which a service of the stack restarted
        measured the stack, not imaged: it is done again (up to 3 times),
        whatever its outcome, and that does not count as imaged's retry.
        """
        failures = redone = 0
        while True:
            services = stack_services(self.stack['STACK_DIR']) \
                if timed else None
            try:
                return self._checked(func, services)
            except (SampleFailed, NoRoom):
                raise
            except StackDisturbed as e:
                redone += 1
                self.retries.append({'what': what, 'error': str(e),
                                     'stack': True})
                log('%s: %s; %s', what, e, 'again' if redone <= 3 else
                    'counted as a failure')
                if redone <= 3:
                    self.wait_for_stack()
                    continue
                error = e
            except Exception as e:
                error = e
            failures += 1
            if failures > 1:
                log('%s failed again: %s', what, describe(error))
                self.errors.append({'what': what, 'error': describe(error),
                                    'traceback': ''.join(
                                        traceback.format_exception(error))})
                raise SampleFailed(what) from error
            log('%s failed (%s); retrying once', what, describe(error))
            self.retries.append({'what': what, 'error': describe(error)})
            self.revive_agent()
            self.wait_for_stack()

    def _checked(self, func, services):
        if services is None:
            return func()
        try:
            result = func()
        except Exception as e:
            if stack_services(self.stack['STACK_DIR']) != services:
                raise StackDisturbed('a service of the stack restarted '
                                     'during the sample (%s)' %
                                     describe(e)) from e
            raise
        if stack_services(self.stack['STACK_DIR']) != services:
            raise StackDisturbed('a service of the stack restarted during '
                                 'the sample')
        return result

    def revive_agent(self):
        """Start imaged again if it exited (and say so)."""
        process = self.agent.daemon.process
        if process.poll() is None:
            return
        self.errors.append({'what': 'imaged', 'error': 'the daemon exited '
                            'with %s; started again' % process.returncode})
        log('imaged exited with %s; starting it again', process.returncode)
        self.agent.start()

    def problems(self):
        problems = self.glance.problems() + self.ceph.problems()
        try:
            problems += self.agent.capabilities(timeout=10)['problems']
        except Exception as e:
            problems.append('imaged: %s' % describe(e))
        return problems

    def wait_for_stack(self, timeout=180):
        time.sleep(3)
        deadline = time.monotonic() + timeout
        while True:
            problems = self.problems()
            if not problems:
                return
            if time.monotonic() > deadline:
                log('the stack still has problems: %s', '; '.join(problems))
                return
            time.sleep(3)

    def ensure_room(self, local_bytes, ceph_bytes, what):
        """Refuse a figure the disk or the cluster has no room for."""
        free = min(shutil.disk_usage(self.workdir).free,
                   shutil.disk_usage(self.stack['STACK_DIR']).free)
        avail = self.ceph.available_bytes()
        if free < local_bytes + 4 * GiB or avail < ceph_bytes + 2 * GiB:
            raise NoRoom('%s needs %s on disk and %s in Ceph; %s and %s are '
                         'free' % (what, size_text(local_bytes),
                                   size_text(ceph_bytes), size_text(free),
                                   size_text(avail)))

    # -- what samples make and remove ---------------------------------------

    @contextlib.contextmanager
    def fresh_image(self, data, disk_format='raw', backend='local'):
        """A new Glance image, forgotten everywhere when the block ends."""
        image = self.glance.create(data, disk_format, backend)
        try:
            yield image
        finally:
            self.forget_image(image['id'])

    def forget_image(self, image_id):
        self.ceph.remove_matching([image_id])
        self.agent.forget(image_id)
        self.glance.delete(image_id)

    @contextlib.contextmanager
    def disks(self):
        """Disks made in the block (imaged's and the baselines'), removed
        when it ends."""
        made = Disks(self)
        try:
            yield made
        finally:
            def delete(instance_uuid):
                with contextlib.suppress(Exception):
                    self.agent.delete(instance_uuid)
            with futures.ThreadPoolExecutor(8) as pool:
                list(pool.map(delete, made.instances))
            left = self.ceph.remove_matching(made.instances + made.baseline)
            if left:
                raise RuntimeError('cannot remove disks %s' % left)

    # -- sections ------------------------------------------------------------

    def run(self, sections):
        self.ceph.connect()
        if 'rpc' in sections:  # it boots while imaged does
            self.echo = EchoServer(self.run_id)
        self.agent.start()
        log('imaged %s is serving', self.agent.host)
        for section in SECTIONS:
            if section not in sections:
                continue
            try:
                MEASURES[section](self)
            except SampleFailed as e:
                log('section %s stopped: %s failed twice', section, e)
            except NoRoom as e:
                log('section %s skipped: %s', section, e)
                self.skipped.append({'section': section, 'reason': str(e)})
            except Exception as e:
                log('section %s stopped: %s', section, describe(e))
                self.errors.append({'what': 'section %s' % section,
                                    'error': describe(e),
                                    'traceback': traceback.format_exc()})
        self.derive()

    def derive(self):
        """Figures that compare imaged with itself."""
        cfg, figs = self.config, self.figures

        def compare(section, key, title, unit, label, target, pair):
            value, baseline = (figs.get(k) for k in pair)
            if value and baseline and value is not baseline and \
                    value.samples and baseline.samples:
                fig = self.figure(section, key, title, unit, label, target)
                fig.samples = value.samples
                fig.baseline_samples = baseline.samples
        small, large = cfg.clone_sizes[0], cfg.clone_sizes[-1]
        compare(1, 'clone-flat', 'clone, %s against %s' % (
            size_text(large), size_text(small)), 's',
            'imaged, %s' % size_text(small), Target('<=', 1.2, '<= 1.2x'),
            ('clone-%d' % large, 'clone-%d' % small))
        size, data = cfg.sparse
        compare(3, 'sparse-vs-dense', 'sparse %s against dense %s' % (
            size_text(size), size_text(data)), 's',
            'imaged, dense %s' % size_text(data),
            Target('<=', 1.5, '<= 1.5x'), ('sparse', 'download-%d' % data))
        small, large = cfg.memory_sizes[0], cfg.memory_sizes[-1]
        compare(7, 'memory-flat', 'worker peak RSS, %s against %s' % (
            size_text(large), size_text(small)), 'MiB',
            'worker peak, %s' % size_text(small),
            Target('<=', 1.2, '<= 1.2x'),
            ('memory-%d' % large, 'memory-%d' % small))

    # -- the end -------------------------------------------------------------

    def cleanup(self):
        """Remove everything the run made, whatever state it is in.

        :returns: what could not be removed.
        """
        log('cleaning up')
        processes = [p for p in (self.echo and self.echo.process,
                                 self.agent.daemon.process) if p is not None]
        for process in processes:
            if process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGTERM)
        # imaged finishes the calls in flight before it exits: only then is
        # all it made in the pool.
        for process in processes:
            try:
                process.wait(90)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait(30)
        try:  # a call that timed out may still have made something
            left = self.ceph.remove_matching(sorted(
                self.instances | self.baseline_disks | self.glance.created))
        except Exception as e:
            left = ['RBD images (%s)' % describe(e)]
        for image_id in list(self.glance.ids):
            try:
                self.glance.delete(image_id)
            except Exception as e:
                left.append('Glance image %s (%s)' % (image_id, describe(e)))
        self.ceph.close()
        if left:
            log('could not remove: %s', ', '.join(left))
        log('clean')
        return left


class Disks:
    """The disks one sample makes: imaged's, by instance, and baselines'."""

    def __init__(self, bench):
        self.bench = bench
        self.instances, self.baseline = [], []

    def create(self, image_id, size_gb, trusted_certs=None):
        instance_uuid = str(uuid.uuid4())
        self.bench.instances.add(instance_uuid)
        self.instances.append(instance_uuid)
        return self.bench.agent.create(instance_uuid, image_id, size_gb,
                                       trusted_certs)

    def baseline_name(self):
        name = 'imaged-bench-%s-%s' % (self.bench.run_id,
                                       uuid.uuid4().hex[:8])
        self.bench.baseline_disks.add(name)
        self.baseline.append(name)
        return name
