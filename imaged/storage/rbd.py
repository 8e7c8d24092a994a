"""Root disks in a Ceph RBD pool.

This is the only module that talks to librados/librbd. The ``rados`` and
``rbd`` modules are injectable so unit tests can pass small fakes.

A root disk (or a base image) is always made under a unique temporary name
and renamed to ``<instance_uuid>_disk`` (``<image_id>_base``) only once it
is complete, so a crash at any point can leave a partial image, but never
one that looks finished. Partial names carry a tag of the host that made
them (and the host's name in their metadata, for operators); each agent
sweeps its own leftovers at start-up and every 30 seconds.
"""

import contextlib
import errno
import hashlib
import json
import os
import threading
import time
import uuid

from oslo_log import log as logging

from imaged import exception
from imaged.i18n import _
from imaged.storage import location as rbd_location
from imaged.storage import rbd_import

LOG = logging.getLogger(__name__)

PARTIAL_SUFFIX = '.imaged-part'
OWNER_KEY = 'imaged.host'
BASE_SNAPSHOT = 'snap'
# What librados reports when monitors or OSDs do not answer in time.
_UNREACHABLE_ERRNOS = (errno.ETIMEDOUT, errno.ESHUTDOWN, errno.ENOTCONN,
                       errno.EINTR)


def disk_name(instance_uuid):
    return '%s_disk' % instance_uuid


def base_name(image_id):
    return '%s_base' % image_id


def host_tag(host):
    """A short, name-safe tag of a host, carried in its partial names."""
    return hashlib.sha256(host.encode('utf-8')).hexdigest()[:8]


def partial_name(name, host):
    """A unique temporary name for ``name`` being made by ``host``.

    Unique, so that agents sharing a pool never step on each other's work
    (two hosts may make the same image's base at once); tagged with the
    host, so that each agent cleans up only what it left itself.
    """
    return '%s.%s-%s%s' % (name, host_tag(host), uuid.uuid4().hex[:8],
                           PARTIAL_SUFFIX)


def partial_owner_tag(part):
    """The host tag of a partial name, or None if it is not one."""
    if not part.endswith(PARTIAL_SUFFIX):
        return None
    tag_and_token = part[:-len(PARTIAL_SUFFIX)].rsplit('.', 1)[-1]
    tag, _sep, token = tag_and_token.partition('-')
    return tag if len(tag) == 8 and token else None


class ImportWriter:
    """A new image being filled under its partial name.

    Data is written with :meth:`write` (pieces at increasing offsets) or
    :meth:`write_file`; :meth:`finish` grows it, optionally snapshots it,
    and renames it to its final name; :meth:`abort` removes it. Nothing
    under the final name exists until :meth:`finish` succeeded.
    """

    def __init__(self, driver, name, size):
        self.driver, self.name, self.size = driver, name, size
        self.part = partial_name(name, driver.host)
        self.finished = False
        self._stack = contextlib.ExitStack()
        driver._mark_in_progress(self.part, True)
        try:
            self._init_image()
        except BaseException:
            self.abort()
            raise

    def _init_image(self):
        driver, name, size = self.driver, self.name, self.size
        with driver._typed_errors(name):
            self.ioctx = self._stack.enter_context(
                driver._ioctx(driver.pool, name))
            driver._call(name, driver.rbd.RBD().create, self.ioctx,
                         self.part, size, old_format=False)
            self.image = driver.rbd.Image(self.ioctx, self.part)
            # Closed before the rename, so it is not on the exit stack.
            self._stack.callback(self._close_image)
            self.image.metadata_set(OWNER_KEY, driver.host)
            self.blocks = rbd_import.BlockWriter(
                self.image, size, driver.conf.rbd.import_concurrency, name,
                driver.pool)

    def _close_image(self):
        image, self.image = getattr(self, 'image', None), None
        if image is not None:
            image.close()

    def write(self, offset, data):
        with self.driver._typed_errors(self.name):
            self.blocks.write(offset, data)

    def write_file(self, path, progress=None):
        fd = os.open(path, os.O_RDONLY)
        try:
            for offset, chunk in rbd_import.data_chunks(
                    fd, min(self.size, os.fstat(fd).st_size)):
                self.write(offset, chunk)
                if progress:
                    progress(offset + len(chunk))
        finally:
            os.close(fd)

    def finish(self, size_bytes, snapshot=None):
        """Make it the finished image ``name`` of at least ``size_bytes``."""
        driver = self.driver
        try:
            with driver._typed_errors(self.name):
                self.blocks.close()
                if self.size < size_bytes:
                    self.image.resize(size_bytes)
                if snapshot:
                    self.image.create_snap(snapshot)
                    self.image.protect_snap(snapshot)
                self._close_image()
                driver.rbd.RBD().rename(self.ioctx, self.part, self.name)
        except BaseException:
            self.abort()
            raise
        self._stack.close()
        driver._mark_in_progress(self.part, False)
        self.finished = True

    def abort(self):
        """Remove the partial image; safe to call more than once, and a
        no-op once :meth:`finish` succeeded."""
        if self.finished:
            return
        blocks = getattr(self, 'blocks', None)
        if blocks is not None:
            blocks.drain()
        self._stack.close()
        try:
            self.driver._remove_partial(self.part)
        finally:
            self.driver._mark_in_progress(self.part, False)


class RBDDriver:
    """Creates, inspects and removes root disks in ``[rbd] pool``."""

    def __init__(self, conf, host, rados_module=None, rbd_module=None):
        if rados_module is None or rbd_module is None:
            import rados
            import rbd
            rados_module = rados_module or rados
            rbd_module = rbd_module or rbd
        self.rados = rados_module
        self.rbd = rbd_module
        self.conf = conf
        self.host = host
        self._cluster = None
        self._cluster_lock = threading.Lock()
        # Partial images this process is making right now: never leftovers.
        self._in_progress = set()
        self._in_progress_lock = threading.Lock()

    @property
    def pool(self):
        return self.conf.rbd.pool

    def _mark_in_progress(self, part, busy):
        with self._in_progress_lock:
            if busy:
                self._in_progress.add(part)
            else:
                self._in_progress.discard(part)

    # -- connection -------------------------------------------------------

    def _new_cluster(self):
        timeout = str(self.conf.rbd.connect_timeout)
        extra = {'client_mount_timeout': timeout,
                 'rados_mon_op_timeout': timeout,
                 'rados_osd_op_timeout': timeout,
                 # Imports write whole 4 MiB objects once: a write-back
                 # cache would only copy them and hold memory.
                 'rbd_cache': 'false'}
        if self.conf.rbd.keyring:
            extra['keyring'] = self.conf.rbd.keyring
        cluster = self.rados.Rados(rados_id=self.conf.rbd.user,
                                   conffile=self.conf.rbd.ceph_conf,
                                   conf=extra)
        try:
            cluster.connect(timeout=self.conf.rbd.connect_timeout)
        except self.rados.Error as e:
            cluster.shutdown()
            raise exception.BackendUnavailable(
                backend='Ceph', reason=_('cannot connect with %(conf)s: '
                                         '%(err)s') %
                {'conf': self.conf.rbd.ceph_conf, 'err': e})
        return cluster

    def _get_cluster(self):
        with self._cluster_lock:
            if self._cluster is None:
                self._cluster = self._new_cluster()
            return self._cluster

    def _drop_cluster(self):
        with self._cluster_lock:
            cluster, self._cluster = self._cluster, None
        if cluster is not None:
            try:
                cluster.shutdown()
            except Exception:  # already broken; nothing more to release
                LOG.debug('Ignoring error shutting down a broken connection',
                          exc_info=True)

    @contextlib.contextmanager
    def _ioctx(self, pool, name=None):
        """An I/O context on ``pool``; Ceph errors become typed errors."""
        cluster = self._get_cluster()
        try:
            ioctx = cluster.open_ioctx(pool)
        except self.rados.ObjectNotFound:
            raise exception.BackendUnavailable(
                backend='Ceph', reason=_('pool %s does not exist') % pool)
        except self.rados.Error as e:
            self._drop_cluster()
            raise exception.BackendUnavailable(
                backend='Ceph', reason=_('cannot open pool %(pool)s: '
                                         '%(err)s') % {'pool': pool, 'err': e})
        try:
            with self._typed_errors(name, pool):
                yield ioctx
        finally:
            ioctx.close()

    @contextlib.contextmanager
    def _typed_errors(self, name, pool=None):
        """Ceph errors inside become imaged's typed errors."""
        pool = pool or self.pool
        try:
            yield
        except self.rbd.ImageExists:
            raise exception.DiskExists(name=name, pool=pool)
        except (self.rados.Error, self.rbd.Error) as e:
            if isinstance(e, (self.rados.TimedOut, self.rbd.Timeout,
                              self.rados.ConnectionShutdown)) or \
                    getattr(e, 'errno', None) in _UNREACHABLE_ERRNOS:
                self._drop_cluster()
                raise exception.BackendUnavailable(
                    backend='Ceph', reason=_('operation on %(name)s in pool '
                                             '%(pool)s failed: %(err)s') %
                    {'name': name, 'pool': pool, 'err': e})
            if isinstance(e, (self.rbd.NoSpace, self.rbd.DiskQuotaExceeded)):
                reason = _('no space: %s') % e
            elif isinstance(e, self.rbd.PermissionError):
                reason = _('permission denied: %s') % e
            else:
                reason = str(e)
            raise exception.StorageError(name=name, pool=pool, reason=reason)

    def fsid(self):
        return self._get_cluster().get_fsid()

    def status(self):
        """``(fsid or None, problems)``: can root disks be made now?"""
        try:
            cluster = self._get_cluster()
            fsid = cluster.get_fsid()
        except exception.BackendUnavailable as e:
            return None, [str(e)]
        try:
            if not cluster.pool_exists(self.pool):
                return fsid, [_('Ceph pool %s does not exist') % self.pool]
            ret, out, err = cluster.mon_command(
                json.dumps({'prefix': 'osd stat', 'format': 'json'}), b'',
                timeout=self.conf.rbd.connect_timeout)
        except self.rados.Error as e:
            self._drop_cluster()
            return fsid, [_('Ceph monitors do not answer: %s') % e]
        if ret != 0:
            return fsid, [_('Ceph monitors refused "osd stat": %s') % err]
        stat = json.loads(out)
        up = stat.get('num_up_osds', stat.get('osdmap', {}).get('num_up_osds'))
        if not up:
            return fsid, [_('Ceph has no OSD up')]
        return fsid, []

    # -- locations ----------------------------------------------------------

    def probe_location(self, url):
        """Whether we can clone ``url``.

        :returns: ``(RBDLocation, snapshot size, None)`` when we can, else
            ``(None, None, the reason why not)``.
        """
        try:
            loc = rbd_location.parse_rbd_location(url)
        except rbd_location.NotAnRBDLocation as e:
            return None, None, str(e)
        fsid = self.fsid()
        if loc.fsid != fsid:
            return None, None, 'is in cluster %s, not ours (%s)' % (
                loc.fsid, fsid)
        try:
            return loc, self.snapshot_size(loc), None
        except exception.ImagedException as e:
            return None, None, 'cannot be opened read-only: %s' % e

    def snapshot_size(self, loc):
        with self._ioctx(loc.pool, loc.image) as ioctx:
            with self.rbd.Image(ioctx, loc.image, snapshot=loc.snapshot,
                                read_only=True) as image:
                return image.size()

    # -- disks ----------------------------------------------------------------

    def disk_info(self, name):
        """``{'size_bytes', 'parent'}`` of a finished disk, or None."""
        with self._ioctx(self.pool, name) as ioctx:
            try:
                with self.rbd.Image(ioctx, name, read_only=True) as image:
                    size = image.size()
                    try:
                        pool, parent, snap = image.parent_info()
                        parent_url = rbd_location.format_rbd_location(
                            self.fsid(), pool, parent, snap)
                    except self.rbd.ImageNotFound:
                        parent_url = None
            except self.rbd.ImageNotFound:
                return None
        return {'size_bytes': size, 'parent': parent_url}

    def clone(self, loc, name, size_bytes):
        """Clone a snapshot into a finished disk ``name`` of ``size_bytes``."""
        part = partial_name(name, self.host)
        self._mark_in_progress(part, True)
        try:
            with self._ioctx(loc.pool, loc.image) as parent_ioctx, \
                    self._ioctx(self.pool, name) as ioctx:
                self._call(name, self.rbd.RBD().clone, parent_ioctx,
                           loc.image, loc.snapshot, ioctx, part)
                self._finish(ioctx, part, name, size_bytes)
        finally:
            self._mark_in_progress(part, False)

    def import_writer(self, name, size):
        """An :class:`ImportWriter` for a new image ``name`` of ``size``."""
        return ImportWriter(self, name, size)

    def import_file(self, path, name, size_bytes, progress=None,
                    snapshot=None):
        """Copy a raw file into a finished image ``name`` of ``size_bytes``.

        Only chunks holding data are written: the new image reads as zeros.
        """
        writer = self.import_writer(name, os.path.getsize(path))
        try:
            writer.write_file(path, progress)
        except BaseException:
            writer.abort()
            raise
        writer.finish(size_bytes, snapshot=snapshot)

    def _finish(self, ioctx, part, name, size_bytes):
        """Grow, label and rename a partial clone; remove it on failure."""
        try:
            with self.rbd.Image(ioctx, part) as image:
                image.metadata_set(OWNER_KEY, self.host)
                if image.size() < size_bytes:
                    self._call(name, image.resize, size_bytes)
            self._call(name, self.rbd.RBD().rename, ioctx, part, name)
        except BaseException:
            self._remove_quietly(ioctx, part)
            raise

    def _call(self, name, func, *args, **kwargs):
        with self._typed_errors(name):
            return func(*args, **kwargs)

    def _remove_image(self, ioctx, name):
        """Remove an image and its (unprotected) snapshots."""
        try:
            self.rbd.RBD().remove(ioctx, name)
        except self.rbd.ImageHasSnapshots:
            with self.rbd.Image(ioctx, name) as image:
                for snap in list(image.list_snaps()):
                    if image.is_protected_snap(snap['name']):
                        image.unprotect_snap(snap['name'])
                    image.remove_snap(snap['name'])
            self.rbd.RBD().remove(ioctx, name)

    def _remove_quietly(self, ioctx, name):
        try:
            self._remove_image(ioctx, name)
        except self.rbd.ImageNotFound:
            pass
        except Exception:
            LOG.warning('Could not remove partial disk %s/%s; it is removed '
                        'at the next start', self.pool, name, exc_info=True)

    def _remove_partial(self, part):
        with self._ioctx(self.pool, part) as ioctx:
            self._remove_quietly(ioctx, part)

    def remove_partial_disks(self):
        """Remove partial images this host left behind (a crash, a kill).

        :returns: ``(removed, left)``: names removed, and names that could
            not be removed yet (a dead client's watch lingers for ~30 s).
        """
        removed, left = [], []
        mine = host_tag(self.host)
        with self._ioctx(self.pool) as ioctx:
            for name in self.rbd.RBD().list(ioctx):
                if partial_owner_tag(name) != mine or \
                        name in self._in_progress:
                    continue
                try:
                    self._remove_image(ioctx, name)
                    removed.append(name)
                except self.rbd.ImageNotFound:
                    pass
                except (self.rbd.Error, self.rados.Error) as e:
                    LOG.debug('Partial image %s/%s not removable yet: %s',
                              self.pool, name, e)
                    left.append(name)
        if removed:
            LOG.info('Removed partial images left by an earlier run: %s',
                     ', '.join(removed))
        return removed, left

    # -- base images ----------------------------------------------------------

    def base_location(self, image_id):
        """``(location, size)`` of the base image's snapshot, or Nones."""
        name = base_name(image_id)
        with self._ioctx(self.pool, name) as ioctx:
            try:
                with self.rbd.Image(ioctx, name, snapshot=BASE_SNAPSHOT,
                                    read_only=True) as snap:
                    size = snap.size()
            except self.rbd.ImageNotFound:
                return None, None
        return rbd_location.RBDLocation(self.fsid(), self.pool, name,
                                        BASE_SNAPSHOT), size

    def base_image_ids(self):
        """Image ids that have a finished base image in the pool."""
        suffix = base_name('')
        with self._ioctx(self.pool) as ioctx:
            return [name[:-len(suffix)] for name in self.rbd.RBD().list(ioctx)
                    if name.endswith(suffix)]

    def remove_base_unless_cloned(self, image_id):
        """Remove the base image of ``image_id`` if no disk is cloned from it.

        :returns: whether it was removed.
        """
        name = base_name(image_id)
        with self._ioctx(self.pool, name) as ioctx:
            try:
                with self.rbd.Image(ioctx, name, snapshot=BASE_SNAPSHOT,
                                    read_only=True) as snap:
                    if list(snap.list_children()):
                        return False
                self._remove_image(ioctx, name)
            except self.rbd.ImageNotFound:
                return False
            except self.rbd.ImageBusy:  # a clone appeared meanwhile
                return False
        return True

    def remove(self, name):
        """Remove a disk (and any partial one), retrying while it is open.

        :returns: whether a finished disk was there.
        """
        deadline = time.monotonic() + self.conf.rbd.delete_busy_timeout
        delay = 0.5
        with self._ioctx(self.pool, name) as ioctx:
            while True:
                try:
                    self.rbd.RBD().remove(ioctx, name)
                    return True
                except self.rbd.ImageNotFound:
                    return False
                except (self.rbd.ImageBusy, self.rbd.ImageHasSnapshots) as e:
                    if time.monotonic() + delay > deadline:
                        raise exception.RootDiskBusy(
                            name=name, pool=self.pool, reason=str(e))
                    LOG.debug('Disk %s/%s busy (%s); retrying', self.pool,
                              name, e)
                    time.sleep(delay)
                    delay = min(delay * 2, 5)
