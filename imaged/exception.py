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

"""Every error a caller of imaged can get.

These classes travel over RPC: the client side rebuilds them from
``imaged.exception`` (an allowed remote exception module) as
``cls(message, **kwargs)``, so each keeps the keyword arguments its message
was formatted from.
"""

from oslo_log import log as logging

from imaged.i18n import _

LOG = logging.getLogger(__name__)


class ImagedException(Exception):
    """Base class: ``msg_fmt`` is formatted with the keyword arguments."""

    msg_fmt = _("An unknown error occurred.")

    def __init__(self, message=None, **kwargs):
        self.kwargs = kwargs
        if not message:
            try:
                message = self.msg_fmt % kwargs
            except (KeyError, TypeError, ValueError):
                # A wrong template must never hide the original error.
                LOG.exception('Cannot format %s message with %s',
                              type(self).__name__, kwargs)
                message = '%s: %s' % (self.msg_fmt, kwargs)
        self.message = message
        super().__init__(message)

    def __str__(self):
        return self.message


class InvalidInput(ImagedException):
    msg_fmt = _("Invalid %(argument)s: %(reason)s")


class ImageNotFound(ImagedException):
    msg_fmt = _("Image %(image_id)s could not be found.")


class ImageNotAuthorized(ImagedException):
    msg_fmt = _("Not authorized to read image %(image_id)s.")


class ImageUnacceptable(ImagedException):
    msg_fmt = _("Image %(image_id)s is unacceptable: %(reason)s")


class ImageDataMismatch(ImageUnacceptable):
    """The bytes received are not the image Glance describes (hash or size):
    maybe damaged on the way, so never remembered as the image's fault."""


class ImageSignatureInvalid(ImageUnacceptable):
    """The image's signature does not verify (its bytes, or its signature
    properties, are not what was signed)."""
    msg_fmt = _("Image %(image_id)s failed signature verification: "
                "%(reason)s")


class ImageSignatureMissing(ImageSignatureInvalid):
    msg_fmt = _("Image %(image_id)s is not signed (it lacks %(missing)s) and "
                "signature verification is required.")


class ImageCertificateInvalid(ImageSignatureInvalid):
    msg_fmt = _("The certificate %(certificate_id)s that signed image "
                "%(image_id)s is not valid or not trusted: %(reason)s")


class ImageTooLarge(ImagedException):
    msg_fmt = _("Image %(image_id)s has a virtual size of %(virtual_size)d "
                "bytes, larger than the requested root disk of "
                "%(size_bytes)d bytes.")


class ImageDownloadFailed(ImagedException):
    msg_fmt = _("Download of image %(image_id)s failed: %(reason)s")


class ImageDownloadInterrupted(ImageDownloadFailed):
    """Worth another attempt: the connection dropped, stalled or ended
    short."""
    msg_fmt = _("Download of image %(image_id)s was interrupted: "
                "%(reason)s")


class BackendUnavailable(ImagedException):
    msg_fmt = _("%(backend)s is unavailable: %(reason)s")


class GlanceResponseTooLarge(ImagedException):
    msg_fmt = _("Glance's answer to %(request)s is larger than %(limit)d "
                "bytes ([glance] max_response_bytes): refused")


class GlanceRequestFailed(ImagedException):
    msg_fmt = _("%(what)s of image %(image_id)s failed in Glance: "
                "%(reason)s")


class CacheError(ImagedException):
    msg_fmt = _("The image cache %(path)s cannot keep image %(image_id)s: "
                "%(reason)s")


class CacheFull(CacheError):
    msg_fmt = _("No space left in the image cache %(path)s for image "
                "%(image_id)s: %(reason)s")


class RootDiskBusy(ImagedException):
    msg_fmt = _("Root disk %(name)s in pool %(pool)s is still in use: "
                "%(reason)s")


class StorageError(ImagedException):
    msg_fmt = _("Ceph operation on %(name)s in pool %(pool)s failed: "
                "%(reason)s")


class ForeignBaseImage(StorageError):
    msg_fmt = _("%(name)s in pool %(pool)s was not made by imaged; imaged "
                "leaves it alone.")


class CloneSourceNotFound(StorageError):
    msg_fmt = _("%(name)s in pool %(pool)s cannot be made: the snapshot it "
                "is cloned from is gone: %(reason)s")


class DiskExists(StorageError):
    msg_fmt = _("%(name)s already exists in pool %(pool)s.")


class RootDiskNotFound(ImagedException):
    msg_fmt = _("Root disk %(name)s does not exist in pool %(pool)s.")


class ImageNotWritable(ImagedException):
    msg_fmt = _("Image %(image_id)s cannot take a snapshot: %(reason)s")


class SnapshotFormatUnsupported(ImageNotWritable):
    msg_fmt = _("Image %(image_id)s has disk_format %(disk_format)s and "
                "container_format %(container_format)s; imaged writes "
                "snapshots as raw or qcow2, bare images only.")


class LocationRefused(ImagedException):
    msg_fmt = _("Glance refused location %(url)s for image %(image_id)s: "
                "%(reason)s")


class DiskImageMismatch(ImagedException):
    msg_fmt = _("Root disk %(name)s in pool %(pool)s was made from image "
                "%(existing_image_id)s, not from image %(image_id)s.")


class FlattenCancelled(ImagedException):
    msg_fmt = _("Flatten of %(name)s in pool %(pool)s was cancelled: "
                "%(reason)s")


class Timeout(ImagedException):
    msg_fmt = _("Gave up waiting for %(what)s after %(seconds)s seconds.")


class LeaseLost(ImagedException):
    """The host's lease on a Ceph-side lock ran out before the work was
    committed (the host paused, or lost its OSDs): nothing was committed,
    and the call may be made again."""
    msg_fmt = _("Lost the lease of lock %(name)s in pool %(pool)s before "
                "%(what)s; nothing was committed")


class AgentBusy(ImagedException):
    msg_fmt = _("The image agent on host %(host)s takes no more long calls "
                "now: %(reason)s")


class LazySourceUnavailable(ImagedException):
    msg_fmt = _("The local source of lazy base images on %(address)s "
                "cannot serve: %(reason)s")


class InternalError(ImagedException):
    msg_fmt = _("%(operation)s failed unexpectedly: %(reason)s")


class RPCVersionCapped(ImagedException):
    msg_fmt = _("This call needs imaged RPC API %(version)s, but "
                "[upgrade_levels] imaged caps this client at %(cap)s.")


class NotAuthorized(ImagedException):
    msg_fmt = _("The caller may not %(action)s: %(reason)s")


class KeyManagerUnavailable(BackendUnavailable):
    """The key manager could not give the signing certificate: never a
    reason to use the image unverified."""
    msg_fmt = _("The key manager cannot give certificate %(certificate_id)s "
                "of image %(image_id)s now: %(reason)s")


class KeystoneUnavailable(BackendUnavailable):
    """Keystone could not say whose the call's token is: never a reason to
    act with imaged's own rights."""
    msg_fmt = _("Keystone cannot validate the caller's token now: "
                "%(reason)s")
