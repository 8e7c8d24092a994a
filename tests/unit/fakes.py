"""Small in-memory stand-ins for rados, rbd and Glance."""

import types

FSID = '11111111-2222-3333-4444-555555555555'


class _Error(Exception):
    pass


def make_rados_module():
    mod = types.SimpleNamespace()
    mod.Error = type('Error', (_Error,), {})
    for name in ('ObjectNotFound', 'TimedOut', 'ConnectionShutdown',
                 'PermissionError'):
        setattr(mod, name, type(name, (mod.Error,), {}))
    mod.Rados = FakeRados
    FakeRados.module = mod
    return mod


def make_rbd_module(cluster):
    mod = types.SimpleNamespace()
    mod.Error = type('Error', (_Error,), {})
    for name in ('ImageNotFound', 'ImageExists', 'ImageBusy',
                 'ImageHasSnapshots', 'NoSpace', 'DiskQuotaExceeded',
                 'PermissionError', 'Timeout'):
        setattr(mod, name, type(name, (mod.Error,), {}))
    mod.RBD = lambda: FakeRBD(mod, cluster)
    mod.Image = lambda ioctx, name, snapshot=None, read_only=False: \
        FakeImage(mod, cluster, ioctx.pool, name, snapshot, read_only)
    return mod


class FakeDisk:
    def __init__(self, size, parent=None, parent_disk=None):
        self.size = size
        self.blocks = {}  # offset -> bytes
        self.snapshots = {}  # name -> size
        self.protected = set()
        self.metadata = {}
        self.parent = parent  # (pool, image, snapshot)
        self.parent_disk = parent_disk
        self.busy = 0  # remove() fails with ImageBusy this many times

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
        self.reachable = True
        self.osds_up = 1
        self.writes = []  # (pool, name, offset, length)
        self.rados = make_rados_module()
        self.rbd = make_rbd_module(self)
        FakeRados.cluster = self

    def add_glance_image(self, name, data, snapshot='snap', pool='images'):
        disk = FakeDisk(len(data))
        disk.blocks[0] = bytes(data)
        disk.snapshots[snapshot] = len(data)
        self.pools[pool][name] = disk
        return 'rbd://%s/%s/%s/%s' % (self.fsid, pool, name, snapshot)


class FakeIoctx:
    def __init__(self, pool):
        self.pool = pool
        self.closed = False

    def close(self):
        self.closed = True


class FakeRados:
    cluster = None
    module = None

    def __init__(self, rados_id=None, conffile=None, conf=None):
        self.conf = conf

    def connect(self, timeout=0):
        if not self.cluster.reachable:
            raise self.module.TimedOut('connect timed out')

    def shutdown(self):
        pass

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
        return FakeIoctx(pool)

    def mon_command(self, cmd, inbuf, timeout=0):
        return 0, ('{"num_up_osds": %d}' % self.cluster.osds_up).encode(), ''


class FakeRBD:
    def __init__(self, mod, cluster):
        self.mod, self.cluster = mod, cluster

    def _pool(self, ioctx):
        # librados crashes the process on a closed ioctx.
        assert not ioctx.closed, 'use of a closed ioctx'
        return self.cluster.pools[ioctx.pool]

    def create(self, ioctx, name, size, old_format=False):
        pool = self._pool(ioctx)
        if name in pool:
            raise self.mod.ImageExists(name)
        pool[name] = FakeDisk(size)

    def clone(self, p_ioctx, p_name, p_snap, c_ioctx, c_name):
        parent = self._pool(p_ioctx)[p_name]
        pool = self._pool(c_ioctx)
        if c_name in pool:
            raise self.mod.ImageExists(c_name)
        pool[c_name] = FakeDisk(parent.snapshots[p_snap],
                                parent=(p_ioctx.pool, p_name, p_snap),
                                parent_disk=parent)

    def rename(self, ioctx, src, dest):
        pool = self._pool(ioctx)
        if dest in pool:
            raise self.mod.ImageExists(dest)
        pool[dest] = pool.pop(src)

    def remove(self, ioctx, name):
        pool = self._pool(ioctx)
        if name not in pool:
            raise self.mod.ImageNotFound(name)
        if pool[name].busy:
            pool[name].busy -= 1
            raise self.mod.ImageBusy(name)
        if pool[name].snapshots:
            raise self.mod.ImageHasSnapshots(name)
        del pool[name]

    def list(self, ioctx):
        return list(self._pool(ioctx))


class _Completion:
    def __init__(self, ret):
        self.ret = ret

    def get_return_value(self):
        return self.ret


class FakeImage:
    def __init__(self, mod, cluster, pool, name, snapshot, read_only):
        self.mod, self.cluster, self.pool_name = mod, cluster, pool
        try:
            self.disk = cluster.pools[pool][name]
        except KeyError:
            raise mod.ImageNotFound(name)
        if snapshot is not None and snapshot not in self.disk.snapshots:
            raise mod.ImageNotFound('%s@%s' % (name, snapshot))
        self.name, self.snapshot, self.read_only = name, snapshot, read_only

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def close(self):
        self.closed = True

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

    def metadata_set(self, key, value):
        self.disk.metadata[key] = value

    def metadata_get(self, key):
        return self.disk.metadata[key]

    def aio_write(self, data, offset, oncomplete):
        self.disk.blocks[offset] = bytes(data)
        self.cluster.writes.append((self.pool_name, self.name, offset,
                                    len(data)))
        oncomplete(_Completion(0))

    def flush(self):
        pass

    def create_snap(self, name):
        self.disk.snapshots[name] = self.disk.size

    def protect_snap(self, name):
        self.disk.protected.add(name)

    def unprotect_snap(self, name):
        if self.list_children():
            raise self.mod.ImageBusy('%s@%s has children' % (self.name, name))
        self.disk.protected.discard(name)

    def is_protected_snap(self, name):
        return name in self.disk.protected

    def remove_snap(self, name):
        if name in self.disk.protected:
            raise self.mod.ImageBusy('%s@%s is protected' % (self.name, name))
        del self.disk.snapshots[name]

    def list_snaps(self):
        return [{'name': n, 'size': s} for n, s in self.disk.snapshots.items()]

    def list_children(self):
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

    def show(self, context, image_id):
        from imaged import exception
        if image_id not in self.images:
            raise exception.ImageNotFound(image_id=image_id)
        return dict(self.images[image_id])

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

    def check_health(self):
        return []
