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

"""Section 5: simultaneous calls for one image download it once."""

import threading
import time

from tools.bench.figures import Target
from tools.bench.image_data import ImageData
from tools.bench.progress import log
from tools.bench.sections import alternate
from tools.bench.sizes import disk_gb
from tools.bench.sizes import size_text


def measure(bench):
    size, calls = bench.config.dedup_size, bench.config.dedup_calls
    bench.ensure_room(3 * size, (calls + 2) * size, 'dedup')
    count = bench.figure(
        5, 'dedup-downloads', '%d simultaneous calls, %s: downloads '
        '(worst)' % (calls, size_text(size)), 'downloads', 'ideal',
        Target('<=', 1, '1 download', on='value'), summary='max')
    total = bench.figure(
        5, 'dedup-time', '%d simultaneous calls, %s: all done' % (
            calls, size_text(size)), 's', 'one call alone')
    for rep in range(bench.config.repetitions):
        out = bench.attempt('dedup rep %d' % (rep + 1),
                            lambda: sample(bench, size, calls, rep))
        count.samples.append(out['downloads'])
        count.baseline_samples.append(1)
        total.samples.append(out['total'])
        total.baseline_samples.append(out['alone'])
        log('dedup rep %d: %d downloads, %d calls in %.2fs, one alone '
            '%.2fs', rep + 1, out['downloads'], calls, out['total'],
            out['alone'])


def sample(bench, size, calls, rep):
    size_gb, out = disk_gb(size), {}
    with bench.fresh_image(lambda: ImageData(size)) as shared, \
            bench.fresh_image(lambda: ImageData(size)) as single, \
            bench.disks() as made:
        def simultaneous():
            errors = []

            def call():
                try:
                    made.create(shared['id'], size_gb)
                except Exception as e:
                    errors.append(e)
            threads = [threading.Thread(target=call) for _i in range(calls)]
            started = time.monotonic()
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            out['total'] = time.monotonic() - started
            if errors:
                raise errors[0]

        def alone():
            out['alone'], _res, _mem = made.create(single['id'], size_gb)
        alternate(rep, simultaneous, alone)
        # Glance logs a request as it ends: let the count settle.
        counts = [bench.glance.downloads(shared['id'])]
        while len(counts) < 3 or counts[-1] != counts[-2]:
            time.sleep(0.3)
            counts.append(bench.glance.downloads(shared['id']))
        out['downloads'] = counts[-1]
    return out
