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

"""Small in-memory stand-ins for rados, rbd and Glance."""

import itertools
import struct
import types

FSID = '11111111-2222-3333-4444-555555555555'


class _Error(Exception):
    pass


def make_rados_module():
    mod = types.SimpleNamespace()
    mod.Error = type('Error', (_Error,), {})
    for name in ('ObjectNotFound', 'TimedOut', 'ConnectionShutdown',
                 'PermissionError', 'ObjectBusy', 'ObjectExists', 'NoData'):
        setattr(mod, name, type(name, (mod.Error,), {}))
    mod.Rados = FakeRados
    mod.WriteOpCtx = FakeOp
    mod.ReadOpCtx = FakeOp
    FakeRados.module = mod
    return mod


class FakeOp:
    """librados' WriteOpCtx/ReadOpCtx: steps run by operate_*_op."""

    def __init__(self):
        self.steps = []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def make_rbd_module(cluster):
    mod = types.SimpleNamespace()
    mod.Error = type('Error', (_Error,), {})
    for name in ('ImageNotFound', 'ImageExists', 'ImageBusy',
                 'ImageHasSnapshots', 'NoSpace', 'DiskQuotaExceeded',
                 'PermissionError', 'Timeout', 'InvalidArgument',
                 'OperationCanceled'):
        setattr(mod, name, type(name, (mod.Error,), {}))
    mod.RBD = lambda: FakeRBD(mod, cluster)

    def image(ioctx, name=None, snapshot=None, read_only=False,
              image_id=None):
        if ioctx.rados.deaf or cluster.osds_down:
            raise mod.Timeout('osd op timed out')
        return FakeImage(mod, cluster, ioctx.pool, name, snapshot, read_only,
                         image_id=image_id)
    mod.Image = image
    return mod


_ids = itertools.count(1)


class FakeDisk:
    def __init__(self, size, parent=None, parent_disk=None, clone_format=2):
        self.id = 'fake%04x' % next(_ids)
        self.clone_format = clone_format
        self.trashed_snaps = set()  # snapshots in the trash namespace
        self.size = size
        self.blocks = {}  # offset -> bytes
        self.snapshots = {}  # name -> size
        self.snap_ids = {}  # name -> id, given at the first look
        self.protected = set()
        self.metadata = {}
        self.parent = parent  # (pool, image, snapshot)
        self.parent_disk = parent_disk
        self.busy = 0  # remove() fails with ImageBusy this many times
        self.watchers = 0  # open images: remove() fails while any
        self.migration = None  # a migration target's spec (its header's)

    def read(self, offset, length):
        if self.parent_disk is not None:
            out = bytearray(self.parent_disk.read(offset, length))
        else:
            out = bytearray(length)
        for off, data in self.blocks.items():
            lo, hi = max(off, offset), min(off + len(data), offset + length)
            if lo < hi:
                out[lo - offset:hi - offset] = data[lo - off:hi - off]
        return bytes(out)


class FakeCluster:
    """The state the fake modules share: pools of FakeDisks."""

    def __init__(self, fsid=FSID, pools=('vms', 'images')):
        self.fsid = fsid
        self.pools = {p: {} for p in pools}
        self.trash = {p: {} for p in pools}  # pool -> {id: (name, disk)}
        self.clone_format = 2  # rbd_default_clone_format
        self.min_compat_client = 'mimic'
        self.reachable = True
        self.osds_down = False  # monitors answer, OSD operations time out
        self.osds_up = 1
        self.writes = []  # (pool, name, offset, length)
        self.reads = []  # aio reads: (pool, name, offset, length)
        self.objects = {}  # (pool, object name) -> {lock name: (kind,
        #                    {cookie: expiry})}: rados objects with locks
        self.xattrs = {}  # (pool, object name, xattr) -> bytes
        self.omaps = {}  # (pool, object name) -> {omap key: bytes}
        self.watches = {}  # (pool, object name) -> [FakeWatch]
        self.notifies = 0
        self.lock_ops = 0
        # Operations that reach the cluster: ioctx calls (locks, xattrs,
        # watches, stats), RBD calls (list, create, clone...), image opens.
        self.ops = 0
        self.connections = []  # every FakeRados made
        self.rados = make_rados_module()
        self.rbd = make_rbd_module(self)
        FakeRados.cluster = self

    def expire_locks(self):
        """Every lock's lease runs out now."""
        for locks in self.objects.values():
            for _kind, held in locks.values():
                for cookie in held:
                    held[cookie] = 0

    def held_locks(self):
        """``(pool, object, lock name)`` of every lock still held."""
        return sorted((key[0], key[1], name)
                      for key, locks in self.objects.items()
                      for name, (_kind, held) in locks.items()
                      if FakeIoctx._live(held))

    def add_glance_image(self, name, data, snapshot='snap', pool='images'):
        disk = FakeDisk(len(data))
        disk.blocks[0] = bytes(data)
        disk.snapshots[snapshot] = len(data)
        disk.protected.add(snapshot)  # Glance protects what it shares
        self.pools[pool][name] = disk
        return 'rbd://%s/%s/%s/%s' % (self.fsid, pool, name, snapshot)


class FakeIoctx:
    def __init__(self, pool, cluster=None, rados=None):
        self.pool = pool
        self.cluster, self.rados = cluster, rados
        self.closed = False

    def close(self):
        self.closed = True

    def dup(self):
        """As librados: an I/O context of its own on the same pool."""
        self._check()
        return FakeIoctx(self.pool, self.cluster, self.rados)

    def _check(self):
        self.cluster.ops += 1
        assert not self.closed, 'use of a closed ioctx'
        assert not self.rados.is_shut_down, 'use of a shut down connection'
        if not self.cluster.reachable or self.cluster.osds_down or \
                self.rados.deaf:
            raise FakeRados.module.TimedOut('osd op timed out')

    def stat(self, key):
        self._check()
        if (self.pool, key) not in self.cluster.objects:
            raise FakeRados.module.ObjectNotFound(key)
        return 0, 0

    def _locks(self, key):
        return self.cluster.objects.setdefault((self.pool, key), {})

    @staticmethod
    def _live(held):
        import time
        now = time.monotonic()
        return {c: e for c, e in held.items() if e is None or e > now}

    def _take(self, key, name, cookie, duration, flags, exclusive):
        import time
        self._check()
        locks = self._locks(key)
        kind, held = locks.get(name, (None, {}))
        held = self._live(held)
        renew = flags & 1
        if cookie in held and not renew:
            raise FakeRados.module.ObjectExists(key)
        others = set(held) - {cookie}
        if others and (exclusive or kind == 'exclusive'):
            raise FakeRados.module.ObjectBusy(key)
        held[cookie] = None if duration is None else \
            time.monotonic() + duration
        locks[name] = ('exclusive' if exclusive else 'shared', held)
        self.cluster.lock_ops += 1

    def lock_exclusive(self, key, name, cookie, desc='', duration=None,
                       flags=0):
        self._take(key, name, cookie, duration, flags, True)

    def lock_shared(self, key, name, cookie, tag, desc='', duration=None,
                    flags=0):
        self._take(key, name, cookie, duration, flags, False)

    def unlock(self, key, name, cookie):
        self._check()
        locks = self.cluster.objects.get((self.pool, key))
        if locks is None:
            raise FakeRados.module.ObjectNotFound(key)
        kind, held = locks.get(name, (None, {}))
        if cookie not in self._live(held):
            raise FakeRados.module.ObjectNotFound('%s: not locked' % key)
        del held[cookie]

    def holders(self, key, name):
        """Test helper: the live cookies holding lock ``name``."""
        return set(self._live(self._locks(key).get(name, (None, {}))[1]))

    def set_xattr(self, key, xattr, value):
        self._check()
        self._locks(key)
        self.cluster.xattrs[(self.pool, key, xattr)] = bytes(value)

    def get_xattr(self, key, xattr):
        self._check()
        if (self.pool, key) not in self.cluster.objects:
            raise FakeRados.module.ObjectNotFound(key)
        try:
            return self.cluster.xattrs[(self.pool, key, xattr)]
        except KeyError:
            raise FakeRados.module.NoData(xattr)

    def rm_xattr(self, key, xattr):
        self._check()
        if (self.pool, key) not in self.cluster.objects:
            raise FakeRados.module.ObjectNotFound(key)
        if self.cluster.xattrs.pop((self.pool, key, xattr), None) is None:
            raise FakeRados.module.NoData(xattr)

    def get_xattrs(self, key):
        self._check()
        if (self.pool, key) not in self.cluster.objects:
            raise FakeRados.module.ObjectNotFound(key)
        return iter([(name, value) for (pool, obj, name), value
                     in sorted(self.cluster.xattrs.items())
                     if (pool, obj) == (self.pool, key)])

    def watch(self, key, callback, error_callback=None, timeout=None):
        self._check()
        if (self.pool, key) not in self.cluster.objects:
            raise FakeRados.module.ObjectNotFound(key)
        watches = self.cluster.watches.setdefault((self.pool, key), [])
        watch = FakeWatch(watches, callback, error_callback)
        watches.append(watch)
        return watch

    def notify(self, key, msg='', timeout_ms=5000):
        self._check()
        self.cluster.notifies += 1
        for watch in list(self.cluster.watches.get((self.pool, key), [])):
            watch.callback(1, 2, 3, msg.encode())
        return True

    def remove_object(self, key):
        self._check()
        if self.cluster.objects.pop((self.pool, key), None) is None:
            raise FakeRados.module.ObjectNotFound(key)
        for xattr in [k for k in self.cluster.xattrs
                      if k[:2] == (self.pool, key)]:
            del self.cluster.xattrs[xattr]
        self.cluster.omaps.pop((self.pool, key), None)

    # omap, as python-rados: steps added to an op, run by operate_*_op.
    def set_omap(self, op, keys, values):
        op.steps.append(lambda omap: omap.update(zip(keys, values)))

    def remove_omap_keys(self, op, keys):
        op.steps.append(lambda omap: [omap.pop(k, None) for k in keys])

    def get_omap_vals(self, op, start_after, filter_prefix, max_return):
        found = []

        def read(omap):
            found.extend(sorted(
                (k, v) for k, v in omap.items()
                if k > start_after and k.startswith(filter_prefix))
                [:max_return])
        op.steps.append(read)
        return _LazyIter(found), 0

    def operate_write_op(self, op, key, **kwargs):
        self._check()
        self._locks(key)  # a write makes the object
        omap = self.cluster.omaps.setdefault((self.pool, key), {})
        for step in op.steps:
            step(omap)

    def get_omap_vals_by_keys(self, op, keys):
        found = []
        op.steps.append(lambda omap: found.extend(
            (k, omap[k]) for k in keys if k in omap))
        return _LazyIter(found), 0

    # librbd's objects of a format 2 image, as librados reads them (the
    # fake's image id is its name).
    def _image(self, key, prefix):
        if key.startswith(prefix):
            return self.cluster.pools.get(self.pool, {}).get(
                key[len(prefix):])
        return None

    def read(self, key, length=8192, offset=0):
        self._check()
        if self._image(key, 'rbd_id.') is None:
            raise FakeRados.module.ObjectNotFound(key)
        name = key[len('rbd_id.'):].encode()
        return (struct.pack('<I', len(name)) + name)[offset:offset + length]

    def operate_read_op(self, op, key, **kwargs):
        self._check()
        disk = self._image(key, 'rbd_header.')
        if disk is not None:
            omap = {'metadata_' + k: v.encode()
                    for k, v in disk.metadata.items()}
            if disk.migration is not None:
                omap['migration'] = disk.migration.encode()
            for step in op.steps:
                step(omap)
            return
        if (self.pool, key) not in self.cluster.objects:
            raise FakeRados.module.ObjectNotFound(key)
        omap = self.cluster.omaps.get((self.pool, key), {})
        for step in op.steps:
            step(omap)


class _LazyIter:
    """Iterates what a read op filled in, once it ran."""

    def __init__(self, items):
        self.items = items

    def __iter__(self):
        return iter(self.items)


class FakeWatch:
    def __init__(self, watches, callback, error_callback=None):
        self.watches, self.callback = watches, callback
        self.error_callback = error_callback

    def break_(self, error=-107):
        """As librados does when the watch session breaks."""
        self.error_callback(12345, error)

    def close(self):
        if self in self.watches:
            self.watches.remove(self)


class FakeRados:
    cluster = None
    module = None

    def __init__(self, rados_id=None, conffile=None, conf=None):
        self.conf = conf
        self.is_shut_down = False
        # Made while the OSDs were down, a real connection may never reach
        # them again: its OSD operations time out for ever.
        self.deaf = self.cluster.osds_down
        self.cluster.connections.append(self)

    def connect(self, timeout=0):
        if not self.cluster.reachable:
            raise self.module.TimedOut('connect timed out')

    def shutdown(self):
        self.is_shut_down = True

    def get_fsid(self):
        return self.cluster.fsid

    def pool_exists(self, pool):
        if not self.cluster.reachable:
            raise self.module.TimedOut('mon timed out')
        return pool in self.cluster.pools

    def open_ioctx(self, pool):
        if not self.cluster.reachable:
            raise self.module.TimedOut('timed out')
        if pool not in self.cluster.pools:
            raise self.module.ObjectNotFound(pool)
        assert not self.is_shut_down, 'use of a shut down connection'
        return FakeIoctx(pool, self.cluster, self)

    def mon_command(self, cmd, inbuf, timeout=0):
        if '"osd dump"' in cmd:
            return 0, ('{"require_min_compat_client": "%s"}' %
                       self.cluster.min_compat_client).encode(), ''
        return 0, ('{"num_up_osds": %d}' % self.cluster.osds_up).encode(), ''


class FakeRBD:
    def __init__(self, mod, cluster):
        self.mod, self.cluster = mod, cluster

    def _pool(self, ioctx):
        self.cluster.ops += 1
        # librados crashes the process on a closed ioctx or connection.
        ioctx._check()
        return self.cluster.pools[ioctx.pool]

    def create(self, ioctx, name, size, old_format=False):
        pool = self._pool(ioctx)
        if name in pool:
            raise self.mod.ImageExists(name)
        pool[name] = FakeDisk(size)

    def clone(self, p_ioctx, p_name, p_snap, c_ioctx, c_name):
        try:
            parent = self._pool(p_ioctx)[p_name]
        except KeyError:
            raise self.mod.ImageNotFound(p_name)
        if p_snap not in parent.snapshots:
            raise self.mod.ImageNotFound('%s@%s' % (p_name, p_snap))
        fmt = self.cluster.clone_format
        if fmt == 1 and p_snap not in parent.protected:
            raise self.mod.InvalidArgument('%s@%s is not protected' %
                                           (p_name, p_snap))
        pool = self._pool(c_ioctx)
        if c_name in pool:
            raise self.mod.ImageExists(c_name)
        pool[c_name] = FakeDisk(parent.snapshots[p_snap],
                                parent=(p_ioctx.pool, p_name, p_snap),
                                parent_disk=parent, clone_format=fmt)

    def rename(self, ioctx, src, dest):
        pool = self._pool(ioctx)
        if src not in pool:
            raise self.mod.ImageNotFound(src)
        if dest in pool:
            raise self.mod.ImageExists(dest)
        pool[dest] = pool.pop(src)

    def remove(self, ioctx, name):
        pool = self._pool(ioctx)
        if name not in pool:
            raise self.mod.ImageNotFound(name)
        if pool[name].watchers:
            raise self.mod.ImageBusy('%s has watchers' % name)
        if pool[name].busy:
            pool[name].busy -= 1
            raise self.mod.ImageBusy(name)
        if pool[name].snapshots:
            raise self.mod.ImageHasSnapshots(name)
        self._detach(pool.pop(name))

    def _detach(self, disk):
        """librbd removes a trashed snapshot with its last clone."""
        parent = disk.parent_disk
        if parent is None or disk.parent[2] not in parent.trashed_snaps:
            return
        if not any(d.parent_disk is parent and d.parent == disk.parent
                   for p in self.cluster.pools.values()
                   for d in p.values()):
            parent.trashed_snaps.discard(disk.parent[2])
            del parent.snapshots[disk.parent[2]]

    def trash_move(self, ioctx, name, delay=0):
        pool = self._pool(ioctx)
        if name not in pool:
            raise self.mod.ImageNotFound(name)
        if pool[name].watchers:
            raise self.mod.ImageBusy(name)
        disk = pool.pop(name)
        self.cluster.trash[ioctx.pool][disk.id] = (name, disk)

    def trash_list(self, ioctx):
        self._pool(ioctx)
        return [{'id': i, 'name': n, 'source': 'USER'}
                for i, (n, _d) in self.cluster.trash[ioctx.pool].items()]

    def trash_get(self, ioctx, image_id):
        self._pool(ioctx)
        try:
            name, _disk = self.cluster.trash[ioctx.pool][image_id]
        except KeyError:
            raise self.mod.ImageNotFound(image_id)
        return {'id': image_id, 'name': name, 'source': 'USER'}

    def trash_remove(self, ioctx, image_id, force=False):
        self._pool(ioctx)
        try:
            _name, disk = self.cluster.trash[ioctx.pool][image_id]
        except KeyError:
            raise self.mod.ImageNotFound(image_id)
        if disk.snapshots:
            raise self.mod.ImageBusy(image_id)
        del self.cluster.trash[ioctx.pool][image_id]

    def list(self, ioctx):
        return list(self._pool(ioctx))


class _Completion:
    def __init__(self, ret):
        self.ret = ret

    def get_return_value(self):
        return self.ret


class FakeImage:
    def __init__(self, mod, cluster, pool, name, snapshot, read_only,
                 image_id=None):
        self.mod, self.cluster, self.pool_name = mod, cluster, pool
        if not cluster.reachable:
            raise mod.Timeout('osd op timed out')
        try:
            if image_id is not None:
                found = [d for d in cluster.pools[pool].values()
                         if d.id == image_id]
                found += [d for _n, d in cluster.trash[pool].values()
                          if d.id == image_id]
                self.disk = found[0]
            else:
                self.disk = cluster.pools[pool][name]
        except (KeyError, IndexError):
            raise mod.ImageNotFound(name or image_id)
        if snapshot is not None and snapshot not in self.disk.snapshots:
            raise mod.ImageNotFound('%s@%s' % (name, snapshot))
        self.name, self.snapshot, self.read_only = name, snapshot, read_only
        cluster.ops += 1  # the open
        self.closed = False
        if not read_only:
            self.disk.watchers += 1

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def close(self):
        if not self.closed and not self.read_only:
            self.disk.watchers -= 1
        self.closed = True

    def set_snap(self, name):
        if name not in self.disk.snapshots:
            raise self.mod.ImageNotFound(name)
        self.snapshot = name

    def size(self):
        if self.snapshot:
            return self.disk.snapshots[self.snapshot]
        return self.disk.size

    def resize(self, size):
        self.disk.size = size

    def parent_info(self):
        if self.disk.parent is None:
            raise self.mod.ImageNotFound('no parent')
        return self.disk.parent

    def get_parent_image_spec(self):
        pool, image, snap = self.parent_info()
        return {'pool_name': pool, 'pool_namespace': '',
                'image_name': image, 'snap_name': snap}

    def parent_id(self):
        self.parent_info()
        return self.disk.parent_disk.id

    def flatten(self, on_progress=None):
        assert not self.read_only
        disk = self.disk
        if disk.parent_disk is None:
            raise self.mod.InvalidArgument('%s has no parent' % self.name)
        if on_progress and on_progress(0, 1):
            raise self.mod.OperationCanceled('flatten of %s' % self.name)
        own = disk.blocks
        disk.blocks = {0: disk.parent_disk.read(
            0, min(disk.size, disk.parent_disk.size))}
        disk.blocks.update(own)
        gone = types.SimpleNamespace(parent_disk=disk.parent_disk,
                                     parent=disk.parent)
        disk.parent_disk = disk.parent = None
        FakeRBD(self.mod, self.cluster)._detach(gone)
        if on_progress:
            on_progress(1, 1)

    def metadata_set(self, key, value):
        self.cluster.ops += 1
        assert not self.read_only, 'metadata_set on a read-only image'
        self.disk.metadata[key] = value

    def metadata_get(self, key):
        try:
            return self.disk.metadata[key]
        except KeyError:
            raise KeyError('no metadata %s for image %s' % (key, self.name))

    def metadata_list(self):
        self.cluster.ops += 1
        return list(self.disk.metadata.items())

    def read(self, offset, length):
        return self.disk.read(offset, min(length, self.size() - offset))

    def aio_read(self, offset, length, oncomplete):
        self.cluster.reads.append((self.pool_name, self.name, offset, length))
        oncomplete(_Completion(0), self.read(offset, length))

    def aio_write(self, data, offset, oncomplete):
        self.disk.blocks[offset] = bytes(data)
        self.cluster.writes.append((self.pool_name, self.name, offset,
                                    len(data)))
        oncomplete(_Completion(0))

    def flush(self):
        pass

    def aio_flush(self, oncomplete):
        oncomplete(_Completion(0))

    def create_snap(self, name):
        self.disk.snapshots[name] = self.disk.size

    def protect_snap(self, name):
        self.disk.protected.add(name)

    def unprotect_snap(self, name):
        if any(self.cluster.pools[p][n].clone_format == 1
               for p, n in self.list_children()):
            raise self.mod.ImageBusy('%s@%s has children' % (self.name, name))
        if name not in self.disk.protected:
            raise self.mod.InvalidArgument('%s@%s is not protected' %
                                           (self.name, name))
        self.disk.protected.discard(name)

    def is_protected_snap(self, name):
        return name in self.disk.protected

    def remove_snap(self, name):
        if name in self.disk.protected:
            raise self.mod.ImageBusy('%s@%s is protected' % (self.name, name))
        if any(d.parent_disk is self.disk and d.parent[2] == name
               for p in self.cluster.pools.values() for d in p.values()):
            self.disk.trashed_snaps.add(name)  # the trash namespace
            return
        del self.disk.snapshots[name]
        self.disk.snap_ids.pop(name, None)

    def id(self):
        return self.disk.id

    def snap_get_id(self, name):
        if name not in self.disk.snapshots:
            raise self.mod.ImageNotFound(name)
        return self.disk.snap_ids.setdefault(name, next(_ids))

    def list_snaps(self):
        self.cluster.ops += 1
        return [{'name': n, 'size': s} for n, s in self.disk.snapshots.items()
                if n not in self.disk.trashed_snaps] + \
            [{'name': 'trashed-' + n, 'size': s, 'namespace': 2}
             for n, s in self.disk.snapshots.items()
             if n in self.disk.trashed_snaps]

    def list_children(self):
        self.cluster.ops += 1
        return [(pool, name)
                for pool, disks in self.cluster.pools.items()
                for name, disk in disks.items()
                if disk.parent_disk is self.disk]


class FakeGlance:
    """``show``/``open_data``/``check_health`` over a dict of images."""

    def __init__(self):
        self.images = {}
        self.data = {}
        self.downloads = 0
        self.failures = []  # exceptions raised by the next open_data calls
        self.chunk_size = 64 * 1024

    def add(self, image_id, data=b'', **record):
        import hashlib
        record.setdefault('status', 'active')
        record.setdefault('disk_format', 'raw')
        record.setdefault('size', len(data))
        record.setdefault('os_hash_algo', 'sha512')
        record.setdefault('os_hash_value', hashlib.sha512(data).hexdigest())
        record['id'] = image_id
        self.images[image_id] = record
        self.data[image_id] = data
        return record

    def own_auth(self):
        # A Glance without Keystone: every caller is trusted.
        return None

    def session(self):
        return None

    def add_location(self, context, image_id, url):
        self.images[image_id].update(status='active', locations=[url])

    def set_properties(self, context, image_id, properties):
        self.images[image_id].update(properties)

    def upload(self, context, image_id, data, size):
        self.data[image_id] = b''.join(iter(lambda: data.read(65536), b''))
        self.images[image_id].update(status='active', size=size)

    def show(self, context, image_id, as_service=False):
        from imaged import exception
        from imaged.image import record as image_record
        if image_id not in self.images:
            raise exception.ImageNotFound(image_id=image_id)
        return image_record.ImageRecord.from_glance(self.images[image_id],
                                                    image_id)

    def open_data(self, context, image_id):
        self.downloads += 1
        if self.failures:
            raise self.failures.pop(0)
        data = self.data[image_id]
        return iter([data[i:i + self.chunk_size]
                     for i in range(0, len(data), self.chunk_size)])

    def image_locations(self, context, image_id):
        # As a Glance with its secure defaults, asked by a user without
        # the service role.
        return None, 'the fake Glance has no locations API'

    def open_response(self, context, image_id, read_timeout=None):
        return FakeResponse(self.open_data(context, image_id))

    def rbd_stores(self):
        # One RBD store, in the images pool of the fake cluster.
        return [{'id': 'ceph', 'pool': 'images', 'fsid': FSID}]

    def check_health(self):
        return []


class FakeResponse:
    """A streaming HTTP response (for ``body.ImageBody``) over an iterator
    of chunks; an error the iterator raises comes out of ``readinto``."""

    def __init__(self, chunks):
        self.headers = {}
        self.raw = self
        self.closed = False
        self._chunks = iter(chunks)
        self._pending = b''

    def readinto(self, buf):
        while not self._pending:
            try:
                self._pending = next(self._chunks)
            except StopIteration:
                return 0
        n = min(len(buf), len(self._pending))
        buf[:n] = self._pending[:n]
        self._pending = self._pending[n:]
        return n

    def close(self):
        self.closed = True
