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

"""Options of the [image_cache] group: the on-disk base image cache."""

from oslo_config import cfg

cache_group = cfg.OptGroup(
    'image_cache',
    title='Base image cache options',
    help="""
Images that cannot be cloned inside Ceph are downloaded once into this cache,
checked, converted to raw and kept, keyed by image id, for later root disks.
""")

cache_opts = [
    cfg.StrOpt(
        'base_dir',
        default='$state_path/_base',
        help="""
Directory holding the checked, raw base images, one file per image id.

Temporary files live in its ``.tmp`` subdirectory and are removed at start.
Only one imaged may use a given directory.

Related options:

* ``[DEFAULT] state_path``
"""),
    cfg.BoolOpt(
        'rbd_base_images',
        default=True,
        help="""
Also keep each downloaded image as a base image in ``[rbd] pool``
(``<image_id>_base``, snapshot ``snap``) and make root disks as clones of it.

The first root disk from an image streams it from Glance into the base file
and the base image at once; every later one is a copy-on-write clone made in
milliseconds, even after the base file was evicted. A base image is removed
by the cleanup task once no host of the pool used it for
``rbd_base_min_age`` and no disk is cloned from it. Raw images stream from
Glance straight into the base image, with no local copy. When False, every
root disk is a full (sparse) import of the base file.
"""),
    cfg.IntOpt(
        'max_concurrent_downloads',
        default=4,
        min=1,
        help='Number of different images downloaded from Glance at the same '
             'time. Calls for the same image never download it twice: they '
             'wait for the one download.'),
    cfg.IntOpt(
        'manager_interval',
        default=600,
        min=1,
        help="""
Seconds between runs of the cache cleanup task.

Related options:

* ``remove_unused_base_images_min_age``, ``max_size_gb``
* ``pool_cleanup``
"""),
    cfg.StrOpt(
        'pool_cleanup',
        default='elect',
        choices=[('elect', 'one host of the pool at a time, by lease'),
                 ('always', 'this host at every run'),
                 ('never', 'never this host')],
        help="""
Which hosts do the pool-wide part of the cleanup task: removing base images
no host used for ``rbd_base_min_age``, purging the base images of images
deleted in Glance, and removing the partial images of hosts that died.

With ``elect`` the hosts of a pool elect one (a rados lock with a lease of
two ``manager_interval`` plus 30 seconds, renewed at each run; it moves to
another host when its holder stops), so the pool's cost does not grow with
the number of hosts. ``always`` does it at every run whatever the others do
(a dedicated cleanup host, or a test); ``never`` leaves it to others. Each
host always cleans its own base files and its own partial images.
"""),
    cfg.IntOpt(
        'remove_unused_base_images_min_age',
        default=86400,
        min=0,
        mutable=True,
        help='Base files not used for this many seconds are removed by the '
             'cleanup task. 0 keeps them until ``max_size_gb`` evicts them.'),
    cfg.IntOpt(
        'rbd_base_min_age',
        default=86400,
        min=0,
        mutable=True,
        help="""
Seconds a base image in ``[rbd] pool`` must have gone unused by every host
(and have no clone) before the cleanup task of any host removes it. Never
less than ``[rbd] base_lock_duration``. Only base images imaged made (by
their metadata) are ever removed.
"""),
    cfg.FloatOpt(
        'max_size_gb',
        default=0,
        min=0,
        mutable=True,
        help="""
Upper bound of the cache's size on disk, in GiB (allocated blocks, so sparse
base files count what they really use). The cleanup task evicts least
recently used base files first until the cache fits. A base file in use is
never removed. Images whose Glance ``size`` is larger are refused before
they are downloaded. 0 means no bound.
"""),
    cfg.ListOpt(
        'allowed_disk_formats',
        default=['raw', 'qcow2', 'vmdk', 'vhd', 'vhdx', 'vdi', 'iso'],
        mutable=True,
        help="""
Glance ``disk_format`` values imaged accepts for download.

Possible values:

* Any of raw, qcow2, vmdk, vhd, vhdx, vdi, iso.
"""),
    cfg.ListOpt(
        'allowed_container_formats',
        default=['bare', 'ovf'],
        mutable=True,
        help="""
Glance ``container_format`` values imaged accepts, for images whose data is
the disk itself (``ovf`` only adds metadata Glance keeps apart). Images in
other containers (ova, docker, ami...) are refused before any byte is
downloaded. An image without a container format is accepted.
"""),
    cfg.ListOpt(
        'vmdk_allowed_types',
        default=['streamOptimized', 'monolithicSparse'],
        mutable=True,
        help='VMDK create types that are accepted. Types made of several '
             'extent files (e.g. monolithicFlat, twoGbMaxExtentSparse) can '
             'name host files and are refused unless listed here.'),
    cfg.IntOpt(
        'convert_cpu_time',
        default=3600,
        min=1,
        help='CPU seconds a ``qemu-img convert`` may use before it is '
             'killed.'),
    cfg.IntOpt(
        'convert_address_space_mb',
        default=1024,
        min=64,
        help='Address space limit, in MiB, of ``qemu-img`` processes '
             '(2048 MiB more when it writes into Ceph, for the threads of '
             'librbd).'),
    cfg.IntOpt(
        'convert_timeout',
        default=1800,
        min=1,
        help="""
Wall-clock seconds a ``qemu-img`` process may run before it is killed.

Bounds a conversion that waits rather than computes (a stalled Ceph cluster
or disk), which ``convert_cpu_time`` does not. The image is then refused,
and nothing of the conversion is kept.

Related options:

* ``convert_cpu_time``, ``convert_address_space_mb``
"""),
    cfg.IntOpt(
        'precache_concurrency',
        default=2,
        min=1,
        help="""
Number of images one ``cache_images`` call prepares at the same time.

Each image is fetched and made into a base image exactly as the first
``create_root_disk`` from it would; downloads also count against
``max_concurrent_downloads``.

Related options:

* ``max_concurrent_downloads``
"""),
    cfg.IntOpt(
        'glance_check_interval',
        default=3600,
        min=0,
        mutable=True,
        help="""
Seconds between two questions to Glance about the same cached image.

The cleanup task asks Glance, with imaged's own credentials, whether each
cached image still exists; an image Glance answers 404 for (or shows as
``deleted``, ``pending_delete`` or ``killed``) has its base file removed at
once and its base image in Ceph once no disk is cloned from it. An image
Glance cannot be asked about (unreachable, 5xx, timeout, 403) is kept.
0 disables the check.

Related options:

* ``manager_interval``: how often the cleanup task runs.
"""),
    cfg.BoolOpt(
        'lazy_first_disk',
        default=False,
        help="""
Answer the first root disk of a new raw or qcow2 image before its base
image is copied into Ceph.

When True, an image that cannot be cloned from Glance's own RBD snapshot,
whose ``disk_format`` is raw or qcow2 and whose first bytes the format
inspector accepts (a qcow2 without backing or data file, its virtual
size within the disk's) is made this host's base image as an RBD
import-only migration target: the caller's disk is cloned from it at
once, and its bytes are copied behind it from one download of the image,
which a loopback HTTP
server of this agent (``lazy_source_port``) serves to librbd. The base is
published to the other hosts of the pool only once every byte is copied and
the download's size and hash (and signature, where verified) match Glance's
record; until then the other hosts' calls wait for it as they do for any
download.

The trust this implies: a VM booted from the first disk reads the image's
bytes before their hash has been checked, as a VM cloned from Glance's RBD
snapshot always does. If the hash then turns out wrong, the base is
quarantined (never cloned again, later calls get ``ImageDataMismatch``) but
the first VM keeps the bytes it was given. A read of bytes not yet
downloaded waits at most ``lazy_source_timeout`` seconds, then fails with an
I/O error in the guest; while the agent is down, such reads fail at once.
An agent restarted after a crash finishes the lazy bases it left at its
start, as imaged's own user.

Related options:

* ``lazy_source_port``, ``lazy_source_timeout``
* ``rbd_base_images``: must be True.
"""),
    cfg.BoolOpt(
        'lazy_plain_base',
        default=False,
        help="""
With ``lazy_first_disk``: also write a plain base image of a raw image from
the same download, and publish that one as soon as the download checked
out, at the download's speed, as without ``lazy_first_disk``.

The calls of other hosts then wait for the download only (they wait for
the published base: with this False, the lazy base itself is published
once copied, 2-3 times later than a download would publish one, and a
storm of a new image is slower). The price: the lazy
base is then kept only for the disks already cloned from it (copied,
committed, marked ``imaged.quarantined``: never published) and removed by
the pool's cleanup host after the last of them, so the image's bytes are
twice in the pool meanwhile, and the building host writes them twice.
qcow2 images are not concerned (their base is the lazy one).

Related options:

* ``lazy_first_disk``
"""),
    cfg.PortOpt(
        'lazy_source_port',
        default=9393,
        help="""
Loopback TCP port of the local HTTP server that serves librbd the bytes of
images whose base is being made lazily.

Its URL (``http://127.0.0.1:<port>/images/<image id>``) is written in the
base image's header until its copy is complete, so an agent restarted after
a crash must listen on the same port for the disks already handed out.

Related options:

* ``lazy_first_disk``
"""),
    cfg.IntOpt(
        'lazy_source_timeout',
        default=30,
        min=1,
        help="""
Seconds the local source waits for bytes of an image that are not
downloaded yet before it answers librbd with an error (kept alive): the
read fails with an I/O error instead of hanging the VM.

Related options:

* ``lazy_first_disk``
"""),
]


def register_opts(conf):
    conf.register_group(cache_group)
    conf.register_opts(cache_opts, group=cache_group)


def list_opts():
    return {cache_group: cache_opts}
