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

"""Benchmarks of imaged against the local stack (``tools/stack.sh start``).

Starts its own imaged daemon and calls it only over RPC, as a scheduler
would, and measures each figure beside a baseline taken in the same run (the
same work done directly with librbd, glanceclient, the ``rbd`` CLI or
oslo.messaging): absolute times drift on a shared machine, ratios hold.
Every figure is the median of ``--repetitions`` samples; a sample that fails
is retried once, and the retry is reported.

    .venv/bin/python -m tools.bench            # full: 25 minutes or more
    .venv/bin/python -m tools.bench --quick    # tiny sizes, under a minute

Prints a table, writes the raw figures as JSON (``--json``) and a plot of
time against image size (``--plot``). Exits 0 whenever it measured, whether
or not the targets were met; 1 when imaged or a baseline failed twice.
Everything it creates (Glance images, RBD images, its daemon and state) is
removed at the end, also on failure or SIGTERM.

The modules, by concern: ``config`` and ``sizes`` (what a run measures),
``progress`` (its log on stderr), ``image_data`` (the bytes uploaded),
``machine`` (/proc), ``ceph``, ``glance``, ``agent`` (imaged, over RPC),
``baselines``, ``figures``, ``harness`` (samples, retries, cleanup),
``sections/`` (one module per figure section), ``table`` and ``plot``;
``profile`` records a flame graph of one download (py-spy);
``__main__`` parses the options and writes the report.
"""

import imaged.cmd  # noqa: F401  (selects oslo.service's backend first)
