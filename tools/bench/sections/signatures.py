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

"""Section 9: signed images (issue 28), what verifying them costs.

One agent measures both sides: its ``[glance] verify_glance_signatures``
is off, and a call that gives trusted certificates (nova's API 2.63) has
the image verified. A download with verification against the same
download without it (a second hash over the stream), and the first and
second clone of a signed image (one read of Glance's snapshot, then a
lookup) against a clone that verifies nothing.
"""

import contextlib

from tests.functional import base
from tools.bench.figures import Target
from tools.bench.image_data import ImageData
from tools.bench.progress import log
from tools.bench.sections import alternate
from tools.bench.sizes import disk_gb
from tools.bench.sizes import size_text
from tools import sign_image

CHUNK = 4 * 1024 * 1024


def _chunks(size):
    data = ImageData(size)
    while chunk := data.read(CHUNK):
        yield chunk


def measure(bench):
    size = bench.config.signature_size
    text = size_text(size)
    bench.ensure_room(2 * size, 4 * size, 'signatures %s' % text)
    key, certificate = sign_image.make_key_and_certificate()
    session = base.keystone_session()
    barbican = bench.stack['BARBICAN_URL']
    cert_id = sign_image.store_certificate(session, barbican, certificate)
    props = sign_image.signature_properties(
        sign_image.sign_chunks(key, _chunks(size)), cert_id)
    download = bench.figure(
        9, 'signed-download-%d' % size,
        'download %s, signature verified' % text, 's', 'not verified',
        Target('<=', 1.25, '<= 1.25x'))
    first = bench.figure(
        9, 'signed-clone-first-%d' % size,
        'clone %s, signed, first (reads the snapshot)' % text, 's',
        'clone not verified')
    second = bench.figure(
        9, 'signed-clone-second-%d' % size,
        'clone %s, signed, second (a lookup)' % text, 's',
        'clone not verified', Target('<=', 1.5, '<= 1.5x'))
    try:
        for rep in range(bench.config.repetitions):
            out = bench.attempt('signed download %s rep %d' % (text, rep + 1),
                                lambda: download_sample(bench, size, props,
                                                        cert_id, rep))
            download.samples.append(out['on'])
            download.baseline_samples.append(out['off'])
            out = bench.attempt('signed clone %s rep %d' % (text, rep + 1),
                                lambda: clone_sample(bench, size, props,
                                                     cert_id))
            first.samples.append(out['first'])
            first.baseline_samples.append(out['plain'])
            second.samples.append(out['second'])
            second.baseline_samples.append(out['plain'])
    finally:
        session.delete('%s/v1/secrets/%s' % (barbican, cert_id),
                       raise_exc=False)


@contextlib.contextmanager
def signed_image(bench, size, props, backend):
    with bench.fresh_image(lambda: ImageData(size), 'raw', backend) as image:
        bench.glance.client.images.update(image['id'], **props)
        try:
            yield image['id']
        finally:
            bench.ceph.remove_verification_record(image['id'])


def download_sample(bench, size, props, cert_id, rep):
    """The same bytes downloaded twice, from two images: verified, not."""
    out = {}
    with signed_image(bench, size, props, 'local') as verified, \
            signed_image(bench, size, props, 'local') as plain, \
            bench.disks() as made:
        def on():
            out['on'], result, _mem = made.create(
                verified, disk_gb(size), trusted_certs=[cert_id])
            out['signature'] = result['signature']

        def off():
            out['off'], _result, _mem = made.create(plain, disk_gb(size))
        alternate(rep, on, off)
    log('signed download %s: verified %.2fs (%s), not verified %.2fs',
        size_text(size), out['on'], out['signature'], out['off'])
    return out


def clone_sample(bench, size, props, cert_id):
    out = {}
    with signed_image(bench, size, props, 'ceph') as image_id, \
            bench.disks() as made:
        out['plain'], plain, _mem = made.create(image_id, disk_gb(size))
        out['first'], first, _mem = made.create(
            image_id, disk_gb(size), trusted_certs=[cert_id])
        out['second'], second, _mem = made.create(
            image_id, disk_gb(size), trusted_certs=[cert_id])
    log('signed clone %s: first %.2fs (%s), second %.3fs (%s; %s), not '
        'verified %.3fs (%s)', size_text(size), out['first'],
        first['signature'], out['second'], second['signature'],
        ', '.join(second['timings']), out['plain'],
        ', '.join(plain['timings']))
    return out
