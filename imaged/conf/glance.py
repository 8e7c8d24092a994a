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

"""Options of the [glance] group: how imaged reaches the Image service.

The keystoneauth session, auth and adapter options live in this group, so a
no-auth Glance is ``auth_type = none`` plus ``endpoint_override``, and a real
cloud is ``auth_type = password`` with the service user's credentials.
"""

import copy

from keystoneauth1 import loading as ks_loading
from oslo_config import cfg

glance_group = cfg.OptGroup(
    'glance',
    title='Image service (Glance) options',
    help='How imaged reads image records and data from Glance.')

glance_opts = [
    cfg.IntOpt(
        'num_retries',
        default=3,
        min=0,
        help="""
How many times an interrupted image download starts again.

A download that broke mid-way (connection dropped, short read, stall)
starts again from the first byte into fresh sinks, after 1, 2, 4...
seconds (at most 30). Single requests to Glance (records, locations, the
start of a download) are retried by keystoneauth instead: see
``connect_retries``, ``status_code_retries`` and ``retriable_status_codes``
in this group.
"""),
    cfg.IntOpt(
        'request_timeout',
        default=120,
        min=1,
        mutable=True,
        help="""
Seconds a request to Glance that is not an image's data (a record, its
locations, Glance's versions and stores) may take as a whole, its answer's
body included. ``timeout`` bounds each wait for a byte; this bounds a
Glance that sends one byte just often enough. A request past it fails with
``Timeout`` (checked as each piece of the answer arrives: at most one
``timeout`` later). Image data is bounded by ``download_timeout`` instead.

Related options:

* ``timeout``, ``max_response_bytes``
"""),
    cfg.IntOpt(
        'max_response_bytes',
        default=16 * 1024 * 1024,
        min=4096,
        mutable=True,
        help="""
Largest body, in bytes, of Glance's answer to a request that is not an
image's data. A larger answer is refused (``GlanceResponseTooLarge``)
before it is all read: an image record or its locations are a few KiB.

Related options:

* ``request_timeout``
"""),
    cfg.IntOpt(
        'progress_interval',
        default=5,
        min=1,
        help='Seconds between progress log lines and progress '
             'notifications of a long download, import or snapshot.'),
    cfg.StrOpt(
        'rbd_store_name',
        default='',
        help="""
Name of the Glance store (``enabled_backends``) that keeps images in this
agent's Ceph cluster, or empty to never ask Glance for a copy.

When no location of a raw image can be cloned, imaged asks Glance to copy the
image into this store with the ``copy-image`` import method, waits for the
copy (see ``copy_poll_interval`` and ``copy_timeout``) and clones it; every
host sharing the cluster then clones the same copy. If Glance refuses, the
copy fails or it takes too long, the image is downloaded instead, and the log
and the call's timings say so.

Glance must enable multiple stores with this one among them, enable the
``copy-image`` import method, and let imaged's user pass the ``copy_image``
policy (``admin`` by default). imaged must also be able to read the
locations of images, from the image record or the locations API, or it never
asks for a copy it could not find.

Related options:

* ``copy_poll_interval``
* ``copy_timeout``
"""),
    cfg.FloatOpt(
        'copy_poll_interval',
        default=2.0,
        min=0.1,
        help="""
Seconds between two reads of the image record while Glance copies an image
into ``rbd_store_name``.

Related options:

* ``rbd_store_name``
* ``copy_timeout``
"""),
    cfg.IntOpt(
        'copy_timeout',
        default=600,
        min=1,
        help="""
Seconds to wait for Glance to copy an image into ``rbd_store_name`` (ours or
another host's copy) before downloading the image instead.

The copy goes on in Glance after imaged stops waiting, so later root disks of
the image are clones. Keep this below the timeout callers give
``create_root_disk``.

Related options:

* ``rbd_store_name``
* ``copy_poll_interval``
"""),
    cfg.ListOpt(
        'rbd_store_pools',
        default=['images'],
        help="""
Pools of Glance's RBD stores in this agent's Ceph cluster: the only pools
imaged clones images from.

Used when Glance does not describe its stores (``GET /v2/info/stores/detail``
needs Glance 2025.1 with multiple stores, and the admin or service role).
When it does, the pools of its RBD stores in this cluster are used instead.
An image whose location points anywhere else in this cluster (imaged's own
pool above all: another instance's disk) is refused as unacceptable, never
cloned or downloaded.

Possible values:

* A list of pool names; never ``[rbd] pool``, which is always refused.

Related options:

* ``[rbd] pool``
"""),
    cfg.IntOpt(
        'cloneable_location_ttl',
        default=60,
        min=0,
        help="""
Seconds a cloneable location found for an image (its RBD snapshot and that
snapshot's size) is used again without asking Glance for the image's
locations and Ceph for the snapshot.

Every call still reads the image record with the caller's token, so a caller
who may not see the image, or an image deleted or deactivated in Glance, is
refused as without this. A location that went away within the time (a
clone that finds no snapshot there) is looked up again at once.

Possible values:

* 0: look the location up on every call.
* A number of seconds.

Related options:

* ``rbd_store_pools``, ``rbd_store_name``
"""),
    # -- the download body (imaged.image.body) --------------------------------
    cfg.IntOpt(
        'download_stall_timeout',
        default=60,
        min=1,
        help="""
Seconds a download may go without receiving a byte.

A Glance (or a network) that stops sending in the middle of an image fails
the attempt after this long, and the download starts again as with any
other interrupted download (``num_retries``).

Related options:

* ``num_retries``, ``download_timeout``
"""),
    cfg.IntOpt(
        'download_timeout',
        default=3600,
        min=1,
        help="""
Seconds a whole image download may take, all its attempts included.

Bounds a download that trickles in too slowly to ever finish. Past it the
download fails and is not retried. Raise it for very large images on slow
links.

Related options:

* ``download_stall_timeout``
"""),
]

_DEFAULT_SERVICE_TYPE = 'image'


def _adapter_opts():
    opts = ks_loading.get_adapter_conf_options(include_deprecated=False)
    # Every request to Glance is retried by keystoneauth with these: a
    # connection that fails or times out, and the statuses of a Glance
    # that is briefly unwell (exponential delays from 0.5 s when the
    # delays are unset).
    cfg.set_defaults(opts, service_type=_DEFAULT_SERVICE_TYPE,
                     valid_interfaces=['internal', 'public'],
                     connect_retries=3, status_code_retries=3,
                     retriable_status_codes=['500', '502', '503', '504',
                                             '429'])
    return opts


def _session_opts():
    opts = ks_loading.get_session_conf_options()
    # A Glance that stops answering must not hang a call forever.
    cfg.set_defaults(opts, timeout=60)
    return opts


def register_opts(conf):
    conf.register_group(glance_group)
    conf.register_opts(glance_opts, group=glance_group)
    conf.register_opts(_session_opts(), group=glance_group)
    ks_loading.register_auth_conf_options(conf, glance_group.name)
    conf.register_opts(_adapter_opts(), group=glance_group)


def list_opts():
    opts = copy.deepcopy(glance_opts)
    opts.extend(_session_opts())
    opts.extend(ks_loading.get_auth_common_conf_options())
    opts.extend(ks_loading.get_auth_plugin_conf_options('password'))
    opts.extend(_adapter_opts())
    return {glance_group: opts}
