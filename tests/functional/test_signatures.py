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

"""Signed images (issue 28), on the real stack with Barbican.

Images are signed by tools/sign_image.py's functions, their certificates
kept in the stack's Barbican; the signature properties are added once the
data is uploaded, so that a wrong signature reaches imaged whatever Glance
verifies on upload. The agent verifies with the caller's token.
"""

import json

import rados

from imaged import exception
from imaged.image import signature
from imaged.storage import verified
from tests.functional import base
from tools import sign_image

MiB = 1024 * 1024


def key_manager_options(barbican_url):
    env = base.stack()
    return {'glance': dict(base.glance_options(env),
                           verify_glance_signatures='true'),
            'key_manager': {'backend': 'barbican'},
            'barbican': {'barbican_endpoint': barbican_url,
                         'auth_endpoint': env['OS_AUTH_URL']}}


class SignedImagesTestCase(base.FunctionalTestCase):

    barbican_url = None  # the stack's

    @classmethod
    def setUpClass(cls):
        env = base.stack()
        if 'BARBICAN_URL' not in env:
            raise RuntimeError('the stack has no Barbican: run tools/stack.sh '
                               'start barbican')
        cls.daemon_options = key_manager_options(cls.barbican_url or
                                                 env['BARBICAN_URL'])
        super().setUpClass()
        cls.key, certificate = sign_image.make_key_and_certificate()
        cls.certificate_id = cls.store(certificate)

    @classmethod
    def store(cls, certificate):
        url = base.stack()['BARBICAN_URL']
        certificate_id = sign_image.store_certificate(
            base.keystone_session(), url, certificate)
        cls.secrets = getattr(cls, 'secrets', []) + [certificate_id]
        return certificate_id

    @classmethod
    def tearDownClass(cls):
        url = base.stack()['BARBICAN_URL']
        for certificate_id in getattr(cls, 'secrets', []):
            base.keystone_session().delete(
                '%s/v1/secrets/%s' % (url, certificate_id), raise_exc=False)
        super().tearDownClass()

    def signed(self, data, backend, signed_data=None, key=None,
               certificate_id=None):
        """An image of ``data`` in ``backend`` whose signature is of
        ``signed_data`` (default: ``data``)."""
        image = self.glance.create(data, backend=backend)
        props = sign_image.signature_properties(
            sign_image.sign_chunks(key or self.key,
                                   [data if signed_data is None
                                    else signed_data]),
            certificate_id or self.certificate_id)
        self.glance.client.images.update(image['id'], **props)
        self.addCleanup(self.forget_record, image['id'])
        return image['id']

    def forget_record(self, image_id):
        with self.ceph.cluster.open_ioctx(self.ceph.pool) as ioctx:
            try:
                ioctx.remove_object(verified.record_object(image_id))
            except Exception:  # none was made
                pass

    def record(self, image_id):
        with self.ceph.cluster.open_ioctx(self.ceph.pool) as ioctx:
            try:
                return json.loads(ioctx.get_xattr(
                    verified.record_object(image_id), verified.XATTR))
            except (rados.ObjectNotFound, rados.NoData):
                return None

    def assert_refused(self, error_class, image_id, trusted_certs=None):
        instance_uuid = self.new_instance()
        e = self.assertRaises(
            error_class, self.api.create_root_disk, self.ctxt, self.host,
            instance_uuid, image_id, 1, trusted_certs=trusted_certs)
        self.assertIn(image_id, str(e))
        self.assertNotIn('%s_disk' % instance_uuid, self.ceph.names())
        self.assertNotIn(image_id, self.cached_ids())
        return e


class SignedImagesTest(SignedImagesTestCase):

    def test_a_signed_image_in_ceph_is_read_once_then_cloned(self):
        image_id = self.signed(base.random_raw(4 * MiB), 'ceph')
        first = self.create_root_disk(image_id)
        second = self.create_root_disk(image_id)
        self.assertEqual(('clone', 'clone'),
                         (first['strategy'], second['strategy']))
        self.assertEqual(signature.SNAPSHOT, first['signature']['outcome'])
        # The second disk reads nothing: the pool's record answers.
        self.assertEqual(signature.RECORDED, second['signature']['outcome'])
        record = self.record(image_id)
        self.assertEqual(('verified', 4 * MiB),
                         (record['outcome'], record['bytes']))
        self.assertEqual(1, self.daemon.log().count(
            'Verifying the signature of image %s' % image_id))

    def test_precache_verifies_ahead_of_the_clones(self):
        image_id = self.signed(base.random_raw(MiB), 'ceph')
        self.assertEqual({image_id: 'existing'}, self.api.cache_images(
            self.ctxt, self.host, [image_id]))
        disk = self.create_root_disk(image_id)
        self.assertEqual(signature.RECORDED, disk['signature']['outcome'])

    def test_a_signed_image_in_the_file_store_is_verified_as_it_downloads(
            self):
        image_id = self.signed(base.random_raw(4 * MiB), 'local')
        disk = self.create_root_disk(image_id)
        self.assertEqual('download', disk['strategy'])
        self.assertEqual(signature.DOWNLOAD, disk['signature']['outcome'])

    def test_a_wrong_signature_is_refused_on_both_paths(self):
        data = base.random_raw(MiB)
        other = data[:-1] + bytes([data[-1] ^ 1])
        in_ceph = self.signed(data, 'ceph', signed_data=other)
        self.assert_refused(exception.ImageSignatureInvalid, in_ceph)
        self.assertEqual('refused', self.record(in_ceph)['outcome'])
        in_file = self.signed(data, 'local', signed_data=other)
        self.assert_refused(exception.ImageSignatureInvalid, in_file)

    def test_an_unsigned_image_is_refused_on_both_paths(self):
        for backend in ('ceph', 'local'):
            image_id = self.glance.create(base.random_raw(MiB),
                                          backend=backend)['id']
            e = self.assert_refused(exception.ImageSignatureMissing,
                                    image_id)
            self.assertIn('img_signature', str(e))

    def test_an_untrusted_certificate_is_refused_on_both_paths(self):
        # Trusted: another certificate than the one that signed.
        _key, other = sign_image.make_key_and_certificate('another')
        trusted = [self.store(other)]
        for backend in ('ceph', 'local'):
            image_id = self.signed(base.random_raw(MiB), backend)
            e = self.assert_refused(exception.ImageCertificateInvalid,
                                    image_id, trusted_certs=trusted)
            self.assertIn(self.certificate_id, str(e))
        # The certificate that signed, trusted: the image is taken.
        disk = self.api.create_root_disk(
            self.ctxt, self.host, self.new_instance(), image_id, 1,
            trusted_certs=[self.certificate_id])
        self.assertEqual(signature.DOWNLOAD, disk['signature']['outcome'])

    def test_a_snapshot_changed_in_ceph_after_the_upload_is_refused(self):
        data = base.random_raw(MiB)
        image_id = self.signed(data, 'ceph')
        pool = base.stack()['CEPH_IMAGES_POOL']
        with self.ceph.cluster.open_ioctx(pool) as ioctx:
            with self.ceph.rbd.Image(ioctx, image_id) as image:
                image.unprotect_snap('snap')
                image.remove_snap('snap')
                image.write(b'\xff' * 512, 0)
                image.create_snap('snap')
                image.protect_snap('snap')
        self.assert_refused(exception.ImageDataMismatch, image_id)
        # Every host of the pool finds the refusal.
        record = self.record(image_id)
        self.assertEqual(('refused', 'ImageDataMismatch'),
                         (record['outcome'], record['error']))
        self.assert_refused(exception.ImageDataMismatch, image_id)


class KeyManagerDownTest(SignedImagesTestCase):

    # Nothing listens there: Barbican is down for this agent.
    barbican_url = 'http://127.0.0.1:9'

    def test_barbican_down_gives_a_typed_error_and_no_disk(self):
        image_id = self.signed(base.random_raw(MiB), 'local')
        e = self.assert_refused(exception.KeyManagerUnavailable, image_id)
        self.assertIn(self.certificate_id, str(e))
