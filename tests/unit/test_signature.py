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

"""Signed images (issue 28) over fakes: a fake key manager, fake Ceph."""

import contextlib
import os
import threading
import time

from castellan.common import exception as castellan_exception
from cryptography.hazmat.primitives import serialization
import fixtures

from imaged import context
from imaged import exception
from imaged.image import certificates
from imaged.image import signature
from imaged.imagecache import files as image_cache
from imaged.storage import location
from imaged.storage import rbd as rbd_storage
from imaged.storage import verified
from tests import base
from tests.unit import fakes
from tests.unit import parts
from tools import sign_image

INSTANCE = '5f0c1d2e-3a4b-4c5d-9e6f-7a8b9c0d1e2f'
OTHER_INSTANCE = '6a1d2e3f-4b5c-4d6e-8f7a-8b9c0d1e2f3a'
IMAGE = '0b1e2f4a-1d2c-4e5f-8a9b-0c1d2e3f4a5b'
CERT = '11111111-2222-4333-8444-555555555555'
OTHER_CERT = '66666666-7777-4888-8999-aaaaaaaaaaaa'
DATA = b'boot' * 4096

# One key pair per run: RSA key generation is the slow part.
KEY, CERTIFICATE = sign_image.make_key_and_certificate()
OTHER_KEY, OTHER_CERTIFICATE = sign_image.make_key_and_certificate('other')


class FakeCertificate:
    format = 'X.509'

    def __init__(self, certificate):
        self._der = certificate.public_bytes(serialization.Encoding.DER)

    def get_encoded(self):
        return self._der


class FakeKeyManager:
    """castellan's key manager API: certificates by id, or down."""

    def __init__(self):
        self.certificates = {CERT: FakeCertificate(CERTIFICATE),
                             OTHER_CERT: FakeCertificate(OTHER_CERTIFICATE)}
        self.down = False
        self.tokens = []

    def get(self, ctxt, managed_object_id):
        self.tokens.append(ctxt.auth_token)
        if self.down:
            raise castellan_exception.KeyManagerError(
                reason='connection refused')
        try:
            return self.certificates[managed_object_id]
        except KeyError:
            raise castellan_exception.ManagedObjectNotFoundError(
                uuid=managed_object_id)


def signed_properties(data=DATA, key=KEY, cert=CERT):
    return sign_image.signature_properties(
        sign_image.sign_chunks(key, [data]), cert)


class SignaturesTestCase(base.TestCase):

    def setUp(self):
        super().setUp()
        self.flags(verify_glance_signatures=True, group='glance')
        self.cluster = fakes.FakeCluster()
        self.storage = rbd_storage.RBDDriver(
            self.conf, 'test-host', rados_module=self.cluster.rados,
            rbd_module=self.cluster.rbd)
        self.glance = fakes.FakeGlance()
        self.files = image_cache.BaseFiles(self.conf)
        self.files.prepare()
        self.key_manager = FakeKeyManager()
        self.signatures = signature.Signatures(
            self.conf, self.storage.verified,
            certificates.KeyManager(self.conf, api=self.key_manager))
        self.disks = parts.root_disks(self.conf, self.glance, self.storage,
                                      self.files, signatures=self.signatures)
        self.ctxt = self.context()

    def context(self, trusted_certs=None):
        ctxt = context.get_admin_context()
        ctxt.auth_token = 'the-callers-token'
        ctxt.trusted_certs = trusted_certs
        return ctxt

    def add_cloneable(self, data=DATA, **props):
        url = self.cluster.add_glance_image(IMAGE, data)
        self.glance.add(IMAGE, data, direct_url=url,
                        locations=[{'url': url, 'metadata': {}}], **props)
        return url

    def add_downloadable(self, data=DATA, **props):
        self.glance.add(IMAGE, data, **props)

    def create(self, instance=INSTANCE, ctxt=None):
        # A context per call, as RPC makes them.
        return self.disks.create(ctxt or self.context(), instance, IMAGE, 1)

    def assert_nothing_left(self):
        vms = self.cluster.pools['vms']
        self.assertEqual([], [n for n in vms if n.startswith(INSTANCE)])
        self.assertEqual([], [n for n in vms if n.startswith(IMAGE)])
        self.assertEqual([], self.disks.image_cache.list())
        self.assertIsNone(self.files.lookup(IMAGE))


class ClonePathTest(SignaturesTestCase):

    def snapshot_reads(self):
        reads = []
        real = verified.VerifiedSnapshots.read

        def counted(snapshots, loc, consume, **kw):
            reads.append(loc)
            return real(snapshots, loc, consume, **kw)
        self.useFixture(fixtures.MockPatchObject(
            verified.VerifiedSnapshots, 'read', counted))
        return reads

    def test_the_first_clone_reads_the_snapshot_later_ones_one_lookup(self):
        reads = self.snapshot_reads()
        self.add_cloneable(**signed_properties())
        first = self.create()
        second = self.create(OTHER_INSTANCE)
        self.assertEqual(('clone', signature.SNAPSHOT),
                         (first['strategy'], first['signature']['outcome']))
        self.assertEqual(('clone', signature.RECORDED),
                         (second['strategy'],
                          second['signature']['outcome']))
        self.assertEqual(1, len(reads))
        self.assertIn('signature', [s.split()[0] for s in first['timings']])
        # Read with the caller's token.
        self.assertEqual({'the-callers-token'}, set(self.key_manager.tokens))

    def test_another_host_of_the_pool_finds_the_record(self):
        self.add_cloneable(**signed_properties())
        self.create()
        other = signature.Signatures(
            self.conf, rbd_storage.RBDDriver(
                self.conf, 'other-host', rados_module=self.cluster.rados,
                rbd_module=self.cluster.rbd).verified,
            certificates.KeyManager(self.conf, api=self.key_manager))
        image = self.glance.show(self.ctxt, IMAGE)
        signed = other.check(self.context(), image)
        loc = self.disks.locations.cloneable(self.ctxt, image,
                                             _NoTimings())[0]
        other.verify_snapshot(self.ctxt, image, loc, signed)
        self.assertEqual(signature.RECORDED, signed.outcome)

    def test_a_snapshot_made_again_with_other_bytes_is_refused(self):
        self.add_cloneable(**signed_properties())
        self.create()
        # Glance's snapshot removed and made again over other bytes.
        disk = self.cluster.pools['images'][IMAGE]
        disk.blocks[0] = b'evil' + DATA[4:]
        disk.snap_ids.clear()
        self.disks.locations.forget(IMAGE)
        e = self.assertRaises(exception.ImageDataMismatch, self.create,
                              OTHER_INSTANCE)
        self.assertIn(IMAGE, str(e))
        found = self.storage.verified.recorded(IMAGE)
        self.assertEqual(('refused', 'ImageDataMismatch'),
                         (found['outcome'], found['error']))
        self.assertEqual([], [n for n in self.cluster.pools['vms']
                              if n.startswith(OTHER_INSTANCE)])

    def test_a_wrong_signature_is_refused_and_the_refusal_recorded(self):
        self.add_cloneable(**signed_properties(data=b'other bytes'))
        e = self.assertRaises(exception.ImageSignatureInvalid, self.create)
        self.assertIn(IMAGE, str(e))
        self.assert_nothing_left()
        self.assertEqual('refused',
                         self.storage.verified.recorded(IMAGE)['outcome'])
        # The next call refuses with one lookup.
        e = self.assertRaises(exception.ImageSignatureInvalid, self.create)
        self.assertIn('test-host', str(e))

    def test_precache_verifies_ahead(self):
        self.add_cloneable(**signed_properties())
        self.assertEqual('existing',
                         self.disks.cache_image(self.ctxt, IMAGE))
        self.assertEqual('verified',
                         self.storage.verified.recorded(IMAGE)['outcome'])
        self.assertEqual(signature.RECORDED,
                         self.create()['signature']['outcome'])


class DownloadPathTest(SignaturesTestCase):

    def test_a_signed_download_is_verified_over_the_stream(self):
        self.add_downloadable(**signed_properties())
        disk = self.create()
        self.assertEqual(('download', signature.DOWNLOAD),
                         (disk['strategy'], disk['signature']['outcome']))
        self.assertEqual(1, self.glance.downloads)

    def test_a_wrong_signature_leaves_nothing(self):
        self.add_downloadable(**signed_properties(data=b'other bytes'))
        e = self.assertRaises(exception.ImageSignatureInvalid, self.create)
        self.assertIn(IMAGE, str(e))
        self.assertIn(CERT, str(e))
        self.assert_nothing_left()

    def test_a_signature_that_is_not_base64_is_refused_before_the_download(
            self):
        props = dict(signed_properties(), img_signature='not base64!')
        self.add_downloadable(**props)
        self.assertRaises(exception.ImageSignatureInvalid, self.create)
        self.assertEqual(0, self.glance.downloads)


class DecisionTest(SignaturesTestCase):

    def test_off_unless_asked(self):
        self.flags(verify_glance_signatures=False, group='glance')
        self.add_downloadable()
        self.assertIsNone(self.create()['signature'])
        self.assertEqual([], self.key_manager.tokens)

    def test_an_unsigned_image_is_refused_naming_what_it_lacks(self):
        props = signed_properties()
        del props['img_signature_key_type']
        self.add_downloadable(**props)
        e = self.assertRaises(exception.ImageSignatureMissing, self.create)
        self.assertIn('img_signature_key_type', str(e))
        self.assertEqual(0, self.glance.downloads)
        self.assert_nothing_left()

    def test_trusted_certs_of_the_call_turn_it_on_and_must_chain(self):
        self.flags(verify_glance_signatures=False, group='glance')
        self.add_downloadable(**signed_properties())
        e = self.assertRaises(exception.ImageCertificateInvalid, self.create,
                              ctxt=self.context([OTHER_CERT]))
        self.assertIn(CERT, str(e))
        self.assert_nothing_left()
        disk = self.create(ctxt=self.context([CERT]))
        self.assertEqual(signature.DOWNLOAD, disk['signature']['outcome'])

    def test_validation_without_trusted_certs_refuses(self):
        self.flags(enable_certificate_validation=True, group='glance')
        self.add_downloadable(**signed_properties())
        self.assertRaises(exception.ImageCertificateInvalid, self.create)
        self.flags(default_trusted_certificate_ids=[CERT], group='glance')
        self.assertEqual(signature.DOWNLOAD,
                         self.create()['signature']['outcome'])

    def test_a_certificate_the_key_manager_lacks_is_invalid(self):
        self.add_downloadable(**signed_properties(
            cert='99999999-2222-4333-8444-555555555555'))
        self.assertRaises(exception.ImageCertificateInvalid, self.create)

    def test_key_manager_down_is_a_typed_error_never_an_unverified_disk(
            self):
        self.key_manager.down = True
        self.add_cloneable(**signed_properties())
        e = self.assertRaises(exception.KeyManagerUnavailable, self.create)
        self.assertIn(CERT, str(e))
        self.assertIn(IMAGE, str(e))
        self.assert_nothing_left()

    def test_a_certificate_is_read_once_while_it_is_kept(self):
        self.add_downloadable(**signed_properties())
        self.create()
        self.key_manager.down = True  # kept: not asked again
        self.assertEqual(signature.CACHED,
                         self.create(OTHER_INSTANCE)['signature']['outcome'])
        self.assertEqual(1, len(self.key_manager.tokens))

    def test_kept_for_no_time_every_call_reads_it(self):
        self.flags(certificate_cache_seconds=0, group='glance')
        key_manager = certificates.KeyManager(self.conf, api=self.key_manager)
        for _call in range(2):
            key_manager.certificate(self.ctxt, IMAGE, CERT)
        self.assertEqual(2, len(self.key_manager.tokens))

    def test_a_call_without_a_token_cannot_read_the_certificate(self):
        self.add_downloadable(**signed_properties())
        ctxt = self.context()
        ctxt.auth_token = None
        self.assertRaises(exception.KeyManagerUnavailable, self.create,
                          ctxt=ctxt)


class _NoTimings:
    def step(self, name):
        pass


class SnapshotReadTest(base.TestCase):
    """VerifiedSnapshots.read: aio reads in flight, bytes in order."""

    class Image:
        """Completes each read on a thread of its own, later reads first."""

        def __init__(self, data, fail_at=None):
            self.data, self.fail_at = data, fail_at
            self.threads = []
            self.completed = []  # list.append is atomic

        def size(self):
            return len(self.data)

        def aio_read(self, offset, length, oncomplete):
            def complete():
                time.sleep(0.05 * (1 - offset / len(self.data)))
                self.completed.append(offset)
                if offset == self.fail_at:
                    oncomplete(fakes._Completion(-5), None)
                else:
                    oncomplete(fakes._Completion(0),
                               self.data[offset:offset + length])
            thread = threading.Thread(target=complete)
            self.threads.append(thread)
            thread.start()

    def read(self, image):
        cluster = fakes.FakeCluster()
        storage = rbd_storage.RBDDriver(
            self.conf, 'test-host', rados_module=cluster.rados,
            rbd_module=cluster.rbd)
        cluster.add_glance_image(IMAGE, b'x')
        self.useFixture(fixtures.MockPatchObject(
            cluster.rbd, 'Image', lambda *a, **kw: contextlib.nullcontext(
                image)))
        loc = location.RBDLocation(fakes.FSID, 'images', IMAGE, 'snap')
        got = []
        try:
            return storage.verified.read(loc, got.append, read_size=1000,
                                         depth=4), b''.join(got)
        finally:
            # Every read issued had completed: none runs on a closed image.
            self.assertEqual(len(image.threads), len(image.completed))

    def test_bytes_come_in_order_whatever_order_reads_end_in(self):
        data = os.urandom(10500)
        self.assertEqual((len(data), data), self.read(self.Image(data)))

    def test_a_failed_read_is_a_storage_error_after_the_others_ended(self):
        image = self.Image(os.urandom(10500), fail_at=3000)
        e = self.assertRaises(exception.StorageError, self.read, image)
        self.assertIn('3000', str(e))
        for thread in image.threads:
            thread.join()
