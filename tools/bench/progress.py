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

"""The run's clock and its progress lines on stderr."""

import sys
import time

STARTED = time.monotonic()


def log(msg, *args):
    print('[%6.1fs] %s' % (time.monotonic() - STARTED, msg % args),
          file=sys.stderr, flush=True)


def describe(error):
    """An error in one line: its class and the first line of its text."""
    lines = str(error).strip().splitlines()
    return '%s: %s' % (type(error).__name__, lines[0] if lines else '')
