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

"""``python -m tools.bench.profile``: a flame graph of one download.

Starts imaged as the benchmark does, uploads a raw image of ``--size`` MiB
of random data to Glance's file store, and records imaged's worker with
py-spy (``pip install py-spy``; active samples, one root per thread) while
one ``create_root_disk`` makes the image's first disk. Writes the flame
graph SVG and prints where the samples went, by thread and by the frames
that take the most. Everything it made is removed at the end.

    .venv/bin/python -m tools.bench.profile --size 1024 \\
        --output doc/profile-download-before.svg
"""

import argparse
import collections
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid

from tests.functional import base
import tools.bench  # noqa: F401  (selects oslo.service's backend first)
from tools.bench.agent import Agent
from tools.bench.ceph import AdminCeph
from tools.bench.glance import GlanceImages
from tools.bench.image_data import ImageData
from tools.bench.sizes import disk_gb
from tools.bench.sizes import MiB

# A frame of inferno's SVG: its title, depth (y) and extent in samples.
_FRAME = re.compile(r'<title>(.*?) \([\d,]+ samples?, [\d.]+%\)</title>'
                    r'<rect [^>]*?y="(\d+)"[^>]*?fg:x="(\d+)" fg:w="(\d+)"')


def frames(svg):
    """``[(title, depth, first sample, samples)]`` of a py-spy flame
    graph."""
    with open(svg) as f:
        return [(t, int(y), int(x), int(w))
                for t, y, x, w in _FRAME.findall(f.read())]


def self_samples(found):
    """Samples in each frame itself, not in the frames it called."""
    below = collections.defaultdict(list)
    for title, y, x, w in found:
        below[y].append((x, w))
    steps = sorted(below)
    step = min((b - a for a, b in zip(steps, steps[1:])), default=0)
    spent = collections.Counter()
    for title, y, x, w in found:
        callees = sum(cw for cx, cw in below.get(y + step, [])
                      if x <= cx < x + w)
        spent[title] += w - callees
    return spent


def summary(svg, top=20):
    found = frames(svg)
    if not found:
        return 'no samples'
    total = sum(w for t, _y, _x, w in found if t.startswith('thread ('))
    lines = ['%d active samples, by thread:' % total]
    lines += ['  %5.1f%%  %s' % (100.0 * w / total, t)
              for t, _y, _x, w in sorted(found, key=lambda f: -f[3])
              if t.startswith('thread (') and w * 100 >= total]
    lines.append('by function, its own samples (not its callees\'):')
    lines += ['  %5.1f%%  %s' % (100.0 * n / total, t)
              for t, n in self_samples(found).most_common(top)]
    return '\n'.join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(prog='python -m tools.bench.profile')
    parser.add_argument('--size', type=int, default=1024,
                        help='image size in MiB (default 1024)')
    parser.add_argument('--output', required=True, help='the SVG to write')
    parser.add_argument('--rate', type=int, default=200,
                        help='samples per second')
    parser.add_argument('--imaged-tree', metavar='DIR',
                        help='run the daemon from this source tree')
    args = parser.parse_args(argv)
    if args.imaged_tree:
        os.environ['PYTHONPATH'] = os.path.abspath(args.imaged_tree)
    size = args.size * MiB
    run_id = uuid.uuid4().hex[:8]
    base.configure_client()
    base.CONF.set_override('long_rpc_timeout', 900)
    stack = base.stack()
    ceph, glance = AdminCeph(stack), GlanceImages(stack, run_id)
    workdir = tempfile.mkdtemp(prefix='imaged-profile-', dir='/var/tmp')
    agent = Agent(workdir, run_id)
    instance = str(uuid.uuid4())
    image = spy = None
    try:
        agent.start()
        image = glance.create(lambda: ImageData(size))
        worker = agent.worker()
        spy = subprocess.Popen(
            [os.path.join(os.path.dirname(sys.executable), 'py-spy'),
             'record', '--pid', str(worker), '--threads', '--nonblocking',
             '--rate', str(args.rate), '--output', args.output],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        time.sleep(1)  # py-spy attaches
        seconds, result, _memory = agent.create(instance, image['id'],
                                                disk_gb(size))
        spy.send_signal(signal.SIGINT)
        _out, err = spy.communicate(timeout=60)
        if spy.returncode:
            print(err.decode(errors='replace'), file=sys.stderr)
        print('create_root_disk of %d MiB by %s: %.2f s (%s)' % (
            args.size, result['strategy'], seconds,
            ', '.join(result.get('timings', []))))
        print(summary(args.output))
    finally:
        if spy is not None and spy.poll() is None:
            spy.kill()
        if agent.daemon.process is not None:
            agent.delete(instance)
            agent.daemon.stop()
        if image is not None:
            ceph.remove_matching([image['id'], instance])
            glance.delete(image['id'])
        ceph.close()
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == '__main__':
    sys.exit(main())
