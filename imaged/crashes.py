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

"""Native crashes name their cause.

imaged links librados and librbd, C++ libraries with threads of their own;
a fault in them (SIGSEGV, SIGABRT, SIGBUS, SIGILL, SIGFPE) ends the process
before Python can log a word. So every imaged process, the parent and each
worker, arms :mod:`faulthandler` at start: on such a signal it writes every
thread's Python stack to a file of its own beside the log file,
``<log_file>.fault.<pid>`` (on standard error, so the journal, without a
log file), and the signal then goes on to end the process (with a core
dump where the operator allows them: ``LimitCORE=`` in the systemd unit,
``tools/core-backtrace.sh`` to read one).

The parent reads the file of a worker that died and logs its stacks at
ERROR, next to "killed by signal": the log says which Python call was in
flight. A file whose process ended cleanly is empty, and is removed.
"""

import faulthandler
import glob
import os
import sys

from oslo_log import log as logging

LOG = logging.getLogger(__name__)

_SUFFIX = '.fault.'
# The file faulthandler writes to must stay open for the process's life.
_armed = {'file': None, 'path': None}


def fault_file_prefix(conf):
    """``<log file>.fault.`` or None when imaged logs to standard error."""
    log_file = getattr(conf, 'log_file', None)
    if not log_file:
        return None
    log_dir = getattr(conf, 'log_dir', None)
    if log_dir and not os.path.isabs(log_file):
        log_file = os.path.join(log_dir, log_file)
    return log_file + _SUFFIX


def arm(conf, role):
    """Arm faulthandler in this process (call again in a forked child).

    :param role: ``parent`` or ``worker``, written first in the file.
    :returns: the file's path, or None (standard error).
    """
    prefix = fault_file_prefix(conf)
    previous = _armed['file']
    if prefix is None:
        faulthandler.enable(file=sys.stderr, all_threads=True)
        _armed.update(file=None, path=None)
    else:
        path = '%s%d' % (prefix, os.getpid())
        try:
            handle = open(path, 'w')
        except OSError as e:
            LOG.warning('Cannot write %s (%s): native crashes print their '
                        'Python stacks on standard error', path, e)
            faulthandler.enable(file=sys.stderr, all_threads=True)
            _armed.update(file=None, path=None)
        else:
            handle.write('imaged %s pid %d: Python stacks at a fatal '
                         'signal follow, if any\n' % (role, os.getpid()))
            handle.flush()
            faulthandler.enable(file=handle, all_threads=True)
            _armed.update(file=handle, path=path)
    if previous is not None and previous is not _armed['file']:
        previous.close()  # the parent's file, inherited by a worker
    return _armed['path']


def disarm():
    """A clean exit: nothing to report, so the file goes."""
    handle, path = _armed['file'], _armed['path']
    if handle is None:
        return
    faulthandler.disable()
    _armed.update(file=None, path=None)
    handle.close()
    _remove(path)


def arm_parent(conf):
    """Report what an earlier imaged left, then arm this process."""
    report_dead(conf)
    return arm(conf, 'parent')


def install(conf, launcher):
    """Arm every worker ``launcher`` forks; report the ones that die."""
    def on_new_worker(service_id, worker_id, wrapper):
        arm(conf, 'worker')

    def on_dead_worker(service_id, worker_id, exit_code):
        if exit_code < 0:
            report_dead(conf)

    # oslo.service does not expose its cotyledon ServiceManager; its hooks
    # are the way to reach the workers (as imaged.service.InPlaceReload).
    launcher._manager.register_hooks(on_new_worker=on_new_worker,
                                     on_dead_worker=on_dead_worker)


def report_dead(conf, alive=None):
    """Log the stacks of every imaged process that died of a native crash,
    and remove the files of the ones that ended.

    :param alive: pids still running (default: asks the kernel).
    :returns: ``{pid: stacks}`` of the crashed ones.
    """
    prefix = fault_file_prefix(conf)
    if prefix is None:
        return {}
    crashed = {}
    for path in glob.glob(glob.escape(prefix) + '*'):
        try:
            pid = int(path[len(prefix):])
        except ValueError:
            continue
        if (pid in alive) if alive is not None else _running(pid):
            continue
        try:
            with open(path) as f:
                header = f.readline()
                stacks = f.read()
        except OSError:
            continue
        if stacks.strip():
            crashed[pid] = stacks
            LOG.error('imaged process %(pid)d died of a native crash '
                      '(%(what)s); its Python stacks:\n%(stacks)s',
                      {'pid': pid, 'what': header.strip(),
                       'stacks': stacks})
        _remove(path)
    return crashed


def _running(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove(path):
    try:
        os.unlink(path)
    except OSError:
        pass
