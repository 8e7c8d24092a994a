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

"""Section 6: get_capabilities against a trivial oslo.messaging endpoint."""

import time

from tools.bench.figures import Target
from tools.bench.progress import log
from tools.bench.sections import alternate


def measure(bench):
    calls = bench.config.rpc_calls
    bench.echo.wait_until_serving()
    echo = bench.echo.client.prepare(timeout=30)
    agent = bench.agent.api.client.prepare(server=bench.agent.host,
                                           timeout=30)
    fig = bench.figure(
        6, 'rpc', 'get_capabilities, %d sequential calls' % calls,
        'calls/s', 'trivial oslo.messaging endpoint',
        Target('>=', 0.8, '>= 0.8x'))

    def by_echo():
        echo.call({}, 'ping')

    def by_imaged():
        agent.call(bench.agent.ctxt, 'get_capabilities')

    def rates(rep):
        out = {}

        def rate(call):
            started = time.monotonic()
            for _i in range(calls):
                call()
            out[call] = calls / (time.monotonic() - started)
        alternate(rep, lambda: rate(by_imaged), lambda: rate(by_echo))
        return out[by_imaged], out[by_echo]
    for _i in range(10):  # connections, caches
        by_echo()
        by_imaged()
    for rep in range(bench.config.repetitions):
        agent_rate, echo_rate = bench.attempt('rpc rep %d' % (rep + 1),
                                              lambda: rates(rep))
        fig.samples.append(agent_rate)
        fig.baseline_samples.append(echo_rate)
        log('rpc rep %d: imaged %.0f calls/s, trivial %.0f calls/s',
            rep + 1, fig.samples[-1], fig.baseline_samples[-1])
