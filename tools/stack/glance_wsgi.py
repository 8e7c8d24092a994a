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

"""uWSGI entry point for Glance: glance.wsgi.api with two local fixes.

tools/stack.sh copies this file next to glance-api.conf and points uWSGI at
``glance_wsgi:application``.

1. "Expect: 100-continue": uWSGI's http-socket ignores it (only its HTTP
   router process answers it), so curl, which sends it for bodies over
   1 MiB, would wait a second before every upload.  Answer it before Glance
   reads the body.

2. SQLite and concurrent writers: oslo.db opens every transaction with a
   plain (deferred) BEGIN, reads, then writes.  When two connections do
   that at once, SQLite fails one at once with "database is locked" (no
   busy wait can resolve that deadlock), so concurrent uploads fail with
   HTTP 500.  Start SQLite transactions with BEGIN IMMEDIATE instead, which
   takes the write lock up front and waits (busy_timeout) for it: DB work is
   serialised, the image transfers themselves are not.
"""

import os
import sqlite3

from sqlalchemy.engine import Engine
from sqlalchemy import event
import uwsgi

SQLITE_BUSY_TIMEOUT_MS = 120000


@event.listens_for(Engine, "connect")
def _sqlite_busy_timeout(dbapi_con, connection_record):
    if isinstance(dbapi_con, sqlite3.Connection):
        dbapi_con.execute("PRAGMA busy_timeout = %d" % SQLITE_BUSY_TIMEOUT_MS)


# Class-level listeners run before the engine's own, so this BEGIN comes
# first and oslo.db's (which checks the same flag) is skipped.
@event.listens_for(Engine, "begin")
def _sqlite_begin_immediate(conn):
    if conn.dialect.name == "sqlite" and "in_transaction" not in conn.info:
        conn.exec_driver_sql("BEGIN IMMEDIATE")
        conn.info["in_transaction"] = True


from glance.wsgi.api import application as _glance  # noqa: E402


def application(environ, start_response):
    if environ.get('HTTP_EXPECT', '').lower() == '100-continue':
        os.write(uwsgi.connection_fd(), b'HTTP/1.1 100 Continue\r\n\r\n')
    return _glance(environ, start_response)
