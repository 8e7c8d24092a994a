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

"""Glance's image record, typed, and what it alone rules out.

:class:`ImageRecord` is built once, where the record is read
(:meth:`imaged.image.glance.GlanceAPI.show`); every other module reads its
fields, never Glance's JSON. :func:`check` refuses an image before any byte
moves.
"""

import dataclasses
from typing import Any

from oslo_utils import units

from imaged import exception
from imaged.i18n import _
from imaged.image import format as image_format


def _int_or_none(value):
    return value if type(value) is int and value >= 0 else None


def _str_or_none(value):
    return value if isinstance(value, str) and value else None


def _store_set(value):
    """Glance lists stores as ``"a,b"`` (a list in some versions)."""
    if isinstance(value, (list, tuple)):
        return frozenset(v for v in value if isinstance(v, str) and v)
    if not isinstance(value, str):
        return frozenset()
    return frozenset(n.strip() for n in value.split(',') if n.strip())


# The property imaged gives an image before it uploads a disk's snapshot
# into it: a retry finds an active image that is already that snapshot.
SNAPSHOT_OF = 'imaged_snapshot_of'
# The properties of a signed image (Glance's "Image signing" docs).
SIGNATURE_PROPERTIES = ('img_signature', 'img_signature_hash_method',
                        'img_signature_key_type',
                        'img_signature_certificate_uuid')


@dataclasses.dataclass(frozen=True)
class ImageRecord:
    """What imaged reads of an image's record (``GET /v2/images/{id}``).

    Fields Glance leaves out (or sends with the wrong type) are None or
    empty. ``location_urls`` are the record's ``locations`` (shown only
    when Glance's ``show_multiple_locations`` is on), ``direct_url`` its
    ``direct_url`` (``show_image_direct_url``).
    """

    id: str
    status: str | None = None
    owner: str | None = None
    visibility: str | None = None
    disk_format: str | None = None
    container_format: str | None = None
    size: int | None = None
    virtual_size: int | None = None
    checksum: str | None = None
    os_hash_algo: str | None = None
    os_hash_value: str | None = None
    direct_url: str | None = None
    location_urls: tuple[str, ...] = ()
    stores: frozenset[str] = frozenset()
    importing_to_stores: frozenset[str] = frozenset()
    failed_import_stores: frozenset[str] = frozenset()
    # The instance whose root disk imaged uploaded into it (a snapshot).
    snapshot_of: str | None = None
    # SIGNATURE_PROPERTIES -> value, for those the record has.
    signature: tuple[tuple[str, str], ...] = ()

    @classmethod
    def from_glance(cls, body: dict[str, Any], image_id: str) -> 'ImageRecord':
        """The record from Glance's JSON object for image ``image_id``."""
        urls = tuple(loc['url'] for loc in body.get('locations') or ()
                     if isinstance(loc, dict) and
                     isinstance(loc.get('url'), str) and loc['url'])
        return cls(
            id=image_id,
            status=_str_or_none(body.get('status')),
            owner=_str_or_none(body.get('owner')),
            visibility=_str_or_none(body.get('visibility')),
            disk_format=_str_or_none(body.get('disk_format')),
            container_format=_str_or_none(body.get('container_format')),
            size=_int_or_none(body.get('size')),
            virtual_size=_int_or_none(body.get('virtual_size')),
            checksum=_str_or_none(body.get('checksum')),
            os_hash_algo=_str_or_none(body.get('os_hash_algo')),
            os_hash_value=_str_or_none(body.get('os_hash_value')),
            direct_url=_str_or_none(body.get('direct_url')),
            location_urls=urls,
            stores=_store_set(body.get('stores')),
            importing_to_stores=_store_set(
                body.get('os_glance_importing_to_stores')),
            failed_import_stores=_store_set(
                body.get('os_glance_failed_import')),
            snapshot_of=_str_or_none(body.get(SNAPSHOT_OF)),
            signature=tuple((name, body[name])
                            for name in SIGNATURE_PROPERTIES
                            if _str_or_none(body.get(name))))

    def shown_urls(self) -> list[str]:
        """The locations the record shows: ``locations``, else
        ``direct_url``."""
        if self.location_urls:
            return list(self.location_urls)
        return [self.direct_url] if self.direct_url else []


def check(image: ImageRecord, size_bytes: int, conf: Any,
          keeps_file: bool) -> None:
    """Refuse an image its record already says imaged cannot use.

    :param size_bytes: the root disk it must fit in.
    :param keeps_file: whether its bytes would be kept in the local cache
        (then they must fit ``[image_cache] max_size_gb``).
    :raises ImageUnacceptable, ImageTooLarge: naming the image and why.
    """
    image_id = image.id

    def refuse(reason):
        return exception.ImageUnacceptable(image_id=image_id, reason=reason)

    if image.status != 'active':
        raise refuse(_('its status is %s, not active') % image.status)
    disk_format = image.disk_format
    if not disk_format:
        raise refuse(_('it has no disk_format'))
    if disk_format not in conf.image_cache.allowed_disk_formats or \
            disk_format not in image_format.QEMU_FORMATS:
        raise refuse(_('disk_format %s is not allowed') % disk_format)
    container = image.container_format
    if container and container not in \
            conf.image_cache.allowed_container_formats:
        raise refuse(_('container_format %s cannot be used') % container)
    max_cache = conf.image_cache.max_size_gb * units.Gi
    # A base file is raw: it takes what the image expands to.
    expanded = max(image.virtual_size or 0, image.size or 0)
    if keeps_file and max_cache and expanded > max_cache:
        raise refuse(_('it expands to %(size)d bytes, above the image '
                       'cache bound of %(max)s GiB') %
                     {'size': expanded,
                      'max': conf.image_cache.max_size_gb})
    known = image.virtual_size
    if not known and image_format.QEMU_FORMATS[disk_format] == 'raw':
        known = image.size
    if known and known > size_bytes:
        raise exception.ImageTooLarge(image_id=image_id, virtual_size=known,
                                      size_bytes=size_bytes)
