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

"""Glance image signatures: verified on the download and the clone path.

Nova's rules (``[glance] verify_glance_signatures``,
``enable_certificate_validation``, ``default_trusted_certificate_ids``, the
call's trusted certificate ids) decide whether an image must be verified;
:meth:`Signatures.check` reads the signing certificate from the key
manager (:mod:`imaged.image.certificates`), validates it when asked, and
gives the call's :class:`Signed` image, or refuses it with a typed error.

The bytes are verified by cursive's verifiers, fed by whoever reads them:

* the download stream feeds :meth:`Signed.verifier` the blocks it hashes,
  and verifies before anything is committed;
* a clone of Glance's RBD snapshot is preceded by
  :meth:`Signatures.verify_snapshot`: the snapshot is read once per pool,
  its signature and ``os_hash_value`` verified, and the outcome recorded in
  the pool (:mod:`imaged.storage.verified`) for every host to find.
"""

import hashlib
import json
import threading
import time
from typing import Any

from cryptography import exceptions as crypto_exceptions
from cursive import certificate_utils
from cursive import exception as cursive_exception
from cursive import signature_utils
from oslo_concurrency import lockutils
from oslo_log import log as logging

from imaged import deadline as call_deadline
from imaged import exception
from imaged.i18n import _
from imaged.image import certificates
from imaged.image import download
from imaged.image import record as image_record

LOG = logging.getLogger(__name__)

CERT_UUID = 'img_signature_certificate_uuid'
# Outcomes, as the create's result and notification say them.
DOWNLOAD = 'verified while downloading'
SNAPSHOT = 'verified by reading the snapshot'
RECORDED = 'verified before (recorded in the pool)'
# A disk made from the image cache's copy, which this call did not read.
CACHED = 'certificate checked; cached copy used'


class Verifier:
    """One pass of cursive's verifier over an image's bytes; fresh per
    pass (a verifier hashes what it is given)."""

    def __init__(self, signed: 'Signed') -> None:
        self.signed = signed
        self.seconds = 0.0
        self._cursive = signed.key_type.create_verifier(
            signed.signature, signed.hash_method, signed.public_key)

    def update(self, data: bytes) -> None:
        started = time.monotonic()
        self._cursive.update(data)
        self.seconds += time.monotonic() - started

    def verify(self) -> None:
        """:raises ImageSignatureInvalid: the bytes are not what was
        signed."""
        started = time.monotonic()
        try:
            self._cursive.verify()
        except crypto_exceptions.InvalidSignature:
            raise exception.ImageSignatureInvalid(
                image_id=self.signed.image_id,
                reason=_('its data does not match its signature (certificate '
                         '%s)') % self.signed.certificate_id)
        finally:
            self.seconds += time.monotonic() - started


class Signed:
    """A signed image, as one call verifies it: its signature properties,
    the public key of its (trusted) certificate, and the outcome."""

    def __init__(self, image: Any, properties: dict[str, str], key_type: Any,
                 hash_method: Any, signature: bytes, public_key: Any) -> None:
        self.image_id = image.id
        self.certificate_id = properties[CERT_UUID]
        self.key_type = key_type
        self.hash_method = hash_method
        self.signature = signature
        self.public_key = public_key
        # What a verification was made against: the signature, and the
        # hash Glance promises for the same bytes.
        self.digest = hashlib.sha256(json.dumps(
            [sorted(properties.items()), image.os_hash_algo,
             image.os_hash_value]).encode()).hexdigest()
        self.outcome: str | None = None
        self.seconds = 0.0

    def verifier(self) -> Verifier:
        return Verifier(self)

    def verified(self, outcome: str, seconds: float) -> None:
        self.outcome, self.seconds = outcome, seconds

    def summary(self) -> dict[str, Any]:
        """``{'outcome', 'seconds', 'certificate_id'}`` for results and
        notifications."""
        return {'outcome': self.outcome or 'not verified yet',
                'seconds': round(self.seconds, 3),
                'certificate_id': self.certificate_id}


def _missing(image):
    have = dict(image.signature)
    return [n for n in image_record.SIGNATURE_PROPERTIES if n not in have]


class Signatures:
    """Decides, verifies and records image signatures for one agent.

    :param snapshots: the pool's ``VerifiedSnapshots`` (clone path), or
        None where nothing is cloned.
    :param metrics: an :class:`imaged.metrics.Metrics`, or None.
    """

    def __init__(self, conf: Any, snapshots: Any = None,
                 key_manager: Any = None, metrics: Any = None) -> None:
        self.conf = conf
        self.snapshots = snapshots
        self.key_manager = key_manager or certificates.KeyManager(conf)
        self.metrics = metrics
        self._image_locks = lockutils.Semaphores()
        self._memo_lock = threading.Lock()

    def trusted_certificate_ids(self, context: Any) -> list[str]:
        """The call's trusted certificate ids, else the configured ones
        when certificate validation is on, else none."""
        ids = getattr(context, 'trusted_certs', None)
        if ids:
            return list(ids)
        if self.conf.glance.enable_certificate_validation:
            return list(self.conf.glance.default_trusted_certificate_ids)
        return []

    def required(self, context: Any) -> bool:
        return bool(self.conf.glance.verify_glance_signatures or
                    getattr(context, 'trusted_certs', None))

    def check(self, context: Any, image: Any) -> Signed | None:
        """The call's :class:`Signed` image, or None when no signature is
        verified; the same object for the same call and image.

        :raises ImageSignatureMissing: verification is required and the
            image lacks a signature property.
        :raises ImageSignatureInvalid: its properties cannot be used.
        :raises ImageCertificateInvalid: the certificate does not validate
            against the trusted ones.
        :raises KeyManagerUnavailable: the key manager could not be asked.
        """
        if not self.required(context):
            return None
        with self._memo_lock:
            memo = getattr(context, 'signatures', None)
            if memo is None:
                memo = context.signatures = {}
        if image.id not in memo:
            try:
                memo[image.id] = self._signed(context, image)
            except exception.ImagedException as e:
                self._count('certificate', 0.0, e)
                raise
        return memo[image.id]

    def _signed(self, context, image):
        missing = _missing(image)
        if missing:
            raise exception.ImageSignatureMissing(image_id=image.id,
                                                  missing=', '.join(missing))
        properties = dict(image.signature)
        certificate_id = properties[CERT_UUID]
        try:
            signature = signature_utils.get_signature(
                properties['img_signature'])
            hash_method = signature_utils.get_hash_method(
                properties['img_signature_hash_method'])
            key_type = signature_utils.SignatureKeyType.lookup(
                properties['img_signature_key_type'])
        except cursive_exception.SignatureVerificationError as e:
            raise exception.ImageSignatureInvalid(image_id=image.id,
                                                  reason=e.format_message())
        certificate = self.key_manager.certificate(context, image.id,
                                                   certificate_id)
        self._validate(context, image.id, certificate_id, certificate)
        public_key = certificate.public_key()
        if not isinstance(public_key, key_type.public_key_type):
            raise exception.ImageSignatureInvalid(
                image_id=image.id,
                reason=_('certificate %(cert)s holds no %(type)s key') %
                {'cert': certificate_id, 'type': key_type.name})
        return Signed(image, properties, key_type, hash_method, signature,
                      public_key)

    def _validate(self, context, image_id, certificate_id, certificate):
        """Nova's certificate validation: against the call's trusted
        certificates (always, when it gives some), else the configured
        ones when validation is on."""
        trusted_ids = self.trusted_certificate_ids(context)
        if not trusted_ids:
            if self.conf.glance.enable_certificate_validation:
                raise exception.ImageCertificateInvalid(
                    certificate_id=certificate_id, image_id=image_id,
                    reason=_('no trusted certificate ids were given (by the '
                             'call or [glance] '
                             'default_trusted_certificate_ids)'))
            return
        trusted = []
        for trusted_id in trusted_ids:
            try:
                trusted.append((trusted_id, self.key_manager.certificate(
                    context, image_id, trusted_id)))
            except exception.ImageCertificateInvalid as e:
                LOG.warning('Trusted certificate %s is skipped: %s',
                            trusted_id, e)
        chain = certificate_utils.CertificateVerificationContext(trusted)
        try:
            chain.update(certificate)
            chain.verify()
        except cursive_exception.SignatureVerificationError as e:
            raise exception.ImageCertificateInvalid(
                certificate_id=certificate_id, image_id=image_id,
                reason=e.format_message())

    # -- the clone path -------------------------------------------------------

    def verify_snapshot(self, context: Any, image: Any, loc: Any,
                        signed: Signed) -> None:
        """Make sure Glance's snapshot ``loc`` (an ``RBDLocation`` in our
        cluster) holds what ``signed`` signed, before it is cloned.

        One lookup when any host of the pool verified it before; else the
        snapshot is read, its signature and ``os_hash_value`` verified, and
        the outcome (either way) recorded. This host verifies an image once
        at a time.

        :raises ImageSignatureInvalid, ImageDataMismatch: the snapshot's
            bytes are not what Glance and the signature describe.
        """
        started = time.monotonic()
        identity = self.snapshots.identity(loc)
        found = self._recorded(image.id, identity, signed)
        if found is None:
            lock = self._image_locks.get(image.id)
            wait = call_deadline.of(context).cap(self.conf.long_rpc_timeout)
            if not lock.acquire(timeout=wait):
                raise exception.Timeout(
                    what=_('the signature check of image %s') % image.id,
                    seconds=wait)
            try:
                found = self._recorded(image.id, identity, signed)
                if found is None:
                    found = self._read_and_record(image, loc, identity,
                                                  signed)
                    outcome = SNAPSHOT
                else:
                    outcome = RECORDED
            finally:
                lock.release()
        else:
            outcome = RECORDED
        seconds = time.monotonic() - started
        path = 'clone' if outcome == SNAPSHOT else 'recorded'
        if found['outcome'] != 'verified':
            error = self._refusal(image.id, found)
            self._count(path, seconds, error)
            raise error
        signed.verified(outcome, seconds)
        self._count(path, seconds)

    def _recorded(self, image_id, identity, signed):
        found = self.snapshots.recorded(image_id)
        if found and found.get('snapshot') == identity and \
                found.get('signature') == signed.digest:
            return found
        return None

    def _read_and_record(self, image, loc, identity, signed):
        verifier = signed.verifier()
        expected = download.expected_hash(image)
        hasher = expected[0] if expected else None

        def consume(chunk):
            verifier.update(chunk)
            if hasher is not None:
                hasher.update(chunk)
        LOG.info('Verifying the signature of image %s by reading its '
                 'snapshot %s', image.id, identity['location'])
        started = time.monotonic()
        size = self.snapshots.read(loc, consume)
        record = {'snapshot': identity, 'signature': signed.digest,
                  'outcome': 'verified', 'bytes': size}
        try:
            if hasher is not None and hasher.hexdigest() != expected[1]:
                raise exception.ImageDataMismatch(
                    image_id=image.id,
                    reason=_("its snapshot %(loc)s does not match Glance's "
                             "%(algo)s hash") %
                    {'loc': identity['location'], 'algo': expected[2]})
            verifier.verify()
        except exception.ImageUnacceptable as e:
            record.update(outcome='refused', error=type(e).__name__,
                          reason=e.kwargs.get('reason', str(e)))
        self.snapshots.record(image.id, record)
        elapsed = time.monotonic() - started
        LOG.info('Signature of image %s %s: its snapshot %s, %d bytes read '
                 'in %.2fs', image.id,
                 'verified' if record['outcome'] == 'verified' else
                 'refused (%s)' % record.get('reason'),
                 identity['location'], size, elapsed)
        return record

    @staticmethod
    def _refusal(image_id, found):
        cls = exception.ImageDataMismatch \
            if found.get('error') == 'ImageDataMismatch' \
            else exception.ImageSignatureInvalid
        return cls(image_id=image_id,
                   reason=_('%(reason)s (found by host %(host)s)') %
                   {'reason': found.get('reason'), 'host': found.get('host')})

    # -- the download path ----------------------------------------------------

    def downloaded(self, signed: Signed, verifier: Verifier,
                   error: BaseException | None = None) -> None:
        """Count a download's verification (``verifier.verify`` ran, or
        ``error`` stopped it)."""
        if error is None:
            signed.verified(DOWNLOAD, verifier.seconds)
        self._count('download', verifier.seconds, error)

    def _count(self, path, seconds, error=None):
        if self.metrics is not None:
            self.metrics.signature_checked(path, seconds, error)
