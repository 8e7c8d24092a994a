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

"""Facts about the machine and the source tree; processes, from /proc."""

import contextlib
import glob
import os
import subprocess


def machine_facts():
    facts = {'nproc': len(os.sched_getaffinity(0)), 'cpu_model': None,
             'mem_total_bytes': None, 'kernel': os.uname().release}
    with open('/proc/cpuinfo') as f:
        facts['cpu_model'] = next((line.split(':', 1)[1].strip()
                                   for line in f
                                   if line.startswith('model name')), None)
    with open('/proc/meminfo') as f:
        facts['mem_total_bytes'] = next(int(line.split()[1]) * 1024
                                        for line in f
                                        if line.startswith('MemTotal:'))
    return facts


def source_facts(tree):
    def git(*args):
        return subprocess.run(['git', '-C', tree] + list(args),
                              capture_output=True, text=True).stdout.strip()
    return {'tree': tree, 'commit': git('rev-parse', '--short', 'HEAD'),
            'uncommitted': bool(git('status', '--porcelain', '--',
                                    'imaged'))}


def proc_status_bytes(pid, key):
    """A ``kB`` field of /proc/PID/status, in bytes (None if gone)."""
    try:
        with open('/proc/%d/status' % pid) as f:
            for line in f:
                if line.startswith(key + ':'):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


_TICK = os.sysconf('SC_CLK_TCK')


def cpu_seconds(pid):
    """``(process, machine)``: CPU seconds used so far by process ``pid``
    (all its threads; None if it is gone) and by the whole machine (busy
    time of every CPU)."""
    process = None
    with contextlib.suppress(OSError, ValueError, IndexError):
        with open('/proc/%d/stat' % pid) as f:
            fields = f.read().rsplit(')', 1)[1].split()
        process = (int(fields[11]) + int(fields[12])) / _TICK  # utime, stime
    with open('/proc/stat') as f:
        ticks = [int(t) for t in f.readline().split()[1:]]
    idle = ticks[3] + ticks[4]  # idle, iowait
    return process, (sum(ticks[:8]) - idle) / _TICK


def reset_peak_rss(pid):
    """Start VmHWM afresh from the current RSS (Linux >= 4.0)."""
    with contextlib.suppress(OSError):
        with open('/proc/%d/clear_refs' % pid, 'w') as f:
            f.write('5')


def children(pid):
    kids = []
    with contextlib.suppress(OSError):
        for task in os.listdir('/proc/%d/task' % pid):
            with open('/proc/%d/task/%s/children' % (pid, task)) as f:
                kids += [int(p) for p in f.read().split()]
    return kids


def stack_services(stack_dir):
    """``{pid file: (pid, start time)}`` of the stack's services: changes
    when the fault-injection suite (or anyone) restarts one of them."""
    services = {}
    for pattern in ('ceph/run/*.pid', 'glance/run/*.pid', 'keystone/run/*.pid',
                    'rabbitmq/*.pid'):
        for path in glob.glob(os.path.join(stack_dir, pattern)):
            try:
                with open(path) as f:
                    pid = int(f.read().strip())
                with open('/proc/%d/stat' % pid) as f:
                    services[path] = (pid, f.read().rsplit(')', 1)[1]
                                      .split()[19])
            except (OSError, ValueError):
                services[path] = None
    return services


def alive(pid):
    try:
        with open('/proc/%d/stat' % pid) as f:
            return f.read().rsplit(')', 1)[1].split()[0] != 'Z'
    except OSError:
        return False
