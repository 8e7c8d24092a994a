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

"""A download sink that becomes a file of the image cache: written sparse
under a scratch name, renamed to its final name on commit; and the typed
error of a cache that cannot keep it."""

import contextlib
import errno
import os
from typing import Any

from oslo_log import log as logging

from imaged import exception

LOG = logging.getLogger(__name__)


def fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def cache_error(base_dir: str, image_id: str,
                error: OSError) -> Exception:
    """The typed error for an OSError writing the cache."""
    LOG.warning('Cache %s: writing image %s failed: %s', base_dir, image_id,
                error)
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        return exception.CacheFull(path=base_dir, image_id=image_id,
                                   reason=os.strerror(error.errno))
    return exception.CacheError(path=base_dir, image_id=image_id,
                                reason=str(error))


class FileSink:
    """A download sink: a sparse file renamed to ``dest`` on commit."""

    def __init__(self, base_dir: str, image_id: str, path: str, dest: str,
                 durable: bool) -> None:
        self.base_dir, self.image_id = base_dir, image_id
        self.path, self.dest, self.durable = path, dest, durable
        self.finished = False
        with self._typed():
            self._fd: Any = os.open(path,
                                    os.O_WRONLY | os.O_CREAT | os.O_EXCL,
                                    0o640)

    @contextlib.contextmanager
    def _typed(self):
        try:
            yield
        except OSError as e:
            raise cache_error(self.base_dir, self.image_id, e)

    def write(self, offset: int, data: Any) -> None:
        with self._typed():
            os.pwrite(self._fd, data, offset)

    def commit(self, size: int) -> None:
        try:
            with self._typed():
                os.ftruncate(self._fd, size)
                if self.durable:
                    os.fsync(self._fd)
                fd, self._fd = self._fd, None
                os.close(fd)
                os.rename(self.path, self.dest)
                if self.durable:
                    fsync_dir(os.path.dirname(self.dest))
        except BaseException:
            self.abort()
            raise
        self.finished = True

    def abort(self) -> None:
        if self.finished:
            return
        self.finished = True
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
