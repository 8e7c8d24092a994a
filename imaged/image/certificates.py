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

"""Signing certificates, read from the key manager (castellan, with the
caller's token) and kept a while."""

import threading
from typing import Any

import cachetools
from castellan.common import exception as castellan_exception
from castellan import key_manager as castellan_key_manager
from cryptography.hazmat.backends import default_backend
from cryptography import x509
from cursive import signature_utils

from imaged import exception
from imaged.i18n import _


class KeyManager:
    """Certificates from castellan's key manager, read with the caller's
    context and kept ``[glance] certificate_cache_seconds``; ``api`` is
    injectable (castellan's, made from ``conf`` at the first use, by
    default)."""

    def __init__(self, conf: Any, api: Any = None) -> None:
        self.conf = conf
        self._api = api
        seconds = conf.glance.certificate_cache_seconds
        self._kept: Any = cachetools.TTLCache(maxsize=1024, ttl=seconds) \
            if seconds else None
        self._kept_lock = threading.Lock()

    def _key_manager(self):
        if self._api is None:
            self._api = castellan_key_manager.API(self.conf)
        return self._api

    def certificate(self, context: Any, image_id: str,
                    certificate_id: str) -> Any:
        """The X.509 certificate ``certificate_id`` (cryptography's).

        :raises ImageCertificateInvalid: not in the key manager, or not an
            X.509 certificate.
        :raises KeyManagerUnavailable: the key manager could not be asked.
        """
        def unavailable(reason):
            return exception.KeyManagerUnavailable(
                certificate_id=certificate_id, image_id=image_id,
                reason=reason)

        def invalid(reason):
            return exception.ImageCertificateInvalid(
                certificate_id=certificate_id, image_id=image_id,
                reason=reason)

        if self._kept is not None:
            with self._kept_lock:
                kept = self._kept.get(certificate_id)
            if kept is not None:
                return kept
        if not getattr(context, 'auth_token', None):
            raise unavailable(_('the call has no token to read it with'))
        try:
            found = self._key_manager().get(context, certificate_id)
        except castellan_exception.ManagedObjectNotFoundError:
            raise invalid(_('the key manager has no such certificate'))
        except Exception as e:  # the backend's own errors, connections
            raise unavailable(str(e) or type(e).__name__)
        if getattr(found, 'format', None) != signature_utils.X_509:
            raise invalid(_('it is not an X.509 certificate'))
        try:
            certificate = x509.load_der_x509_certificate(
                found.get_encoded(), default_backend())
        except ValueError as e:
            raise invalid(str(e))
        if self._kept is not None:
            with self._kept_lock:
                self._kept[certificate_id] = certificate
        return certificate
