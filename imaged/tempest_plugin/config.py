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

"""The options of imaged's Tempest plugin, in tempest.conf.

They name the deployment under test beside what Tempest already knows
(Keystone and Glance, from ``[auth]``, ``[identity]`` and ``[image]``): which
agent and how to reach it over RPC (``[imaged]``, read by imaged's own client
code), where Glance keeps images the agent can clone and those it must
download (``[imaged]``), the agent's Ceph cluster (``[imaged_ceph]``), how
to boot a VM from a disk (``[imaged_boot]``) and, for a deployment the tests
may disturb, how to stop and start its parts (``[imaged_fault_injection]``).
"""

from oslo_config import cfg

service_option = cfg.BoolOpt(
    'imaged',
    default=False,
    help='Whether an imaged agent is deployed: its scenario tests run '
         '(``[imaged] host`` and ``transport_url`` name it).')

imaged_group = cfg.OptGroup(
    'imaged', title='imaged agent under test',
    help='The imaged agent the scenario tests call, and Glance\'s stores.')
ceph_group = cfg.OptGroup(
    'imaged_ceph', title='Ceph cluster of the imaged agent',
    help='Read by the tests to check the disks the agent made.')
boot_group = cfg.OptGroup(
    'imaged_boot', title='Booting root disks made by imaged')
fault_injection_group = cfg.OptGroup(
    'imaged_fault_injection', title='Faults the imaged tests may inject')

imaged_opts = [
    cfg.StrOpt(
        'host',
        help="""
``[DEFAULT] host`` of the imaged agent under test: the RPC server the tests
call with ``ImageAgentAPI``. The tests never start or stop it (except the
fault tests, through ``[imaged_fault_injection] daemon_*_command``).
Required when ``[service_available] imaged`` is true.
"""),
    cfg.StrOpt(
        'transport_url',
        secret=True,
        help="""
oslo.messaging transport URL of the agent's broker (its ``[DEFAULT]
transport_url``), e.g. ``rabbit://user:password@broker:5672/``. Required
when ``[service_available] imaged`` is true.
"""),
    cfg.IntOpt(
        'rpc_response_timeout',
        default=30,
        min=1,
        help='Seconds a short RPC call waits for its answer; the long ones '
             '(creating a disk) wait as long as the agent sends heartbeats '
             'this often.'),
    cfg.IntOpt(
        'long_rpc_timeout',
        default=300,
        min=1,
        help='Seconds a long RPC call (creating a disk) may take in all, '
             'as imaged\'s own ``long_rpc_timeout``.'),
    cfg.IntOpt(
        'max_root_disk_gb',
        default=16384,
        min=1,
        help='``[DEFAULT] max_root_disk_gb`` of the agent under test; the '
             'bad-input tests ask for one GiB more and expect a refusal.'),
    cfg.ListOpt(
        'agent_logs',
        default=[],
        help="""
Log files of the agent under test (and of the agents the fault tests start,
``*`` patterns allowed), read after the whole suite by
``tests/scenario/postrun``: no token, password or credential may appear in
them. Empty: that check is skipped and says why.
"""),
    cfg.IntOpt(
        'call_timeout',
        default=300,
        min=10,
        help='Seconds any single RPC call of a test may take before the '
             'test fails (an agent that hangs is a failure, not a wait).'),

    cfg.StrOpt(
        'clone_store',
        default='',
        help="""
Glance store (``enabled_backends`` id) that keeps images as RBD snapshots in
the agent's Ceph cluster: raw images uploaded there must be cloned.

Possible values:

* A store id, e.g. ``ceph``.
* Empty: Glance's default store.
"""),
    cfg.StrOpt(
        'download_store',
        default='',
        help="""
Glance store the agent cannot clone from (a file, HTTP, Swift... store, or
RBD in another cluster): images uploaded there must be downloaded.

Possible values:

* A store id, e.g. ``local``.
* Empty: Glance's default store (then it must not be the cloneable one).
"""),
    cfg.StrOpt(
        'glance_access_log',
        default='',
        help="""
Path, readable by the tests, of Glance's HTTP access log (one line per
request, with the request line ``GET /v2/images/<id>/file``).

When set, the cache tests also prove that an image was downloaded exactly
once by counting these lines. Empty: that count is not checked.
"""),
]

ceph_opts = [
    cfg.StrOpt(
        'ceph_conf',
        default='/etc/ceph/ceph.conf',
        help='ceph.conf of the agent\'s cluster, readable by the tests.'),
    cfg.StrOpt(
        'user',
        default=None,
        help="""
Ceph user the tests check disks with (without ``client.``). It reads
``pool`` and Glance's pool, and removes what a failed test left in
``pool``: ``profile rbd pool=<pool>, profile rbd-read-only`` is enough.
Unset: ``client.admin``.
"""),
    cfg.StrOpt(
        'keyring',
        default=None,
        help='Keyring of ``user``. Unset: the one ``ceph_conf`` names.'),
    cfg.StrOpt(
        'pool',
        default='vms',
        help='``[rbd] pool`` of the agent under test.'),
]

boot_opts = [
    cfg.BoolOpt(
        'enabled',
        default=False,
        help="""
Run the boot tests (``imaged.tempest_plugin.scenario.test_boot``): build a
small bootable disk image from Debian packages, make root disks of it
through the agent and boot each with QEMU (TCG) from the disk's own boot
loader, attached through QEMU's RBD driver as ``[imaged_ceph] user``, which
must be able to write to ``[imaged_ceph] pool``. The machine the tests run
on needs ``qemu-system-x86_64`` with the RBD block driver (Debian:
qemu-system-x86, qemu-block-extra), busybox-static, syslinux,
syslinux-common, dosfstools, mtools, fdisk, and ``apt-get download`` of
a ``linux-image-cloud-amd64`` kernel (the host's kernel is not changed).
When False, they are skipped and say why.

Related options:

* ``image_cache_dir``: where the built image is kept.
"""),
    cfg.StrOpt(
        'image_cache_dir',
        default='',
        help="""
Directory, writable by the tests, where the built boot image is kept, so
that later runs reuse it (a new one is built when its kernel, busybox,
syslinux or recipe changed). Required when ``enabled``.
"""),
    cfg.StrOpt(
        'qemu_command',
        default='qemu-system-x86_64',
        help='The QEMU system emulator the boot tests run.'),
    cfg.IntOpt(
        'boot_timeout',
        default=240,
        min=10,
        help="""
Seconds a boot may take, from QEMU's start until the guest has powered off;
a boot still running then fails its test, and QEMU is ended. Under TCG on
an idle machine the guest powers off within seconds; the default leaves
room for a busy one.
"""),
]

fault_injection_opts = [
    cfg.BoolOpt(
        'enabled',
        default=False,
        help="""
Run the fault tests (``tests/scenario/faults``). They stop and start
RabbitMQ, Glance, Ceph OSDs and the agent, mount a small tmpfs and write
into Glance's file store: only for a disposable deployment such as the local
stack, and only one test at a time (``--concurrency 1``). When False, every
fault test is skipped and says why.
"""),
    cfg.StrOpt(
        'imaged_command',
        default='imaged',
        help='The ``imaged`` executable: fault tests start their own agents '
             'with it, on the machine the tests run on.'),
    cfg.StrOpt(
        'daemon_config_file',
        default='',
        help="""
Configuration file of the agent under test. The agents fault tests start
read it first, then a file of their own that sets ``host``,
``state_path``, ``log_file`` and what the test needs (e.g. a small
``[rbd] connect_timeout``), so they reach the same RabbitMQ, Ceph and
Glance as the agent under test.
"""),
    cfg.StrOpt('daemon_stop_command', default='',
               help='Shell command that stops the agent under test.'),
    cfg.StrOpt('daemon_start_command', default='',
               help='Shell command that starts the agent under test and '
                    'returns (it need not wait until the agent answers).'),
    cfg.StrOpt('glance_stop_command', default='',
               help='Shell command that stops Glance (its API).'),
    cfg.StrOpt('glance_start_command', default='',
               help='Shell command that starts Glance and returns once it '
                    'answers.'),
    cfg.StrOpt('rabbitmq_stop_command', default='',
               help='Shell command that stops the RabbitMQ broker of '
                    '``transport_url``.'),
    cfg.StrOpt('rabbitmq_start_command', default='',
               help='Shell command that starts that broker and returns '
                    'once it accepts connections.'),
    cfg.StrOpt('ceph_osd_stop_command', default='',
               help='Shell command that stops every OSD serving '
                    '``[imaged_ceph] pool``.'),
    cfg.StrOpt('ceph_osd_start_command', default='',
               help='Shell command that starts them again and returns once '
                    'they are up.'),
    cfg.StrOpt(
        'glance_file_store_dir',
        default='',
        help="""
Directory of Glance's ``[imaged] download_store`` file store
(``filesystem_store_datadir``), writable by the tests: the corrupted
download test overwrites an image's bytes there.
"""),
    cfg.IntOpt(
        'command_timeout',
        default=180,
        min=10,
        help='Seconds a stop or start command may take.'),
]


def register_opts(conf):
    conf.register_opt(service_option, group='service_available')
    for group, opts in list_opts():
        conf.register_group(group)
        conf.register_opts(opts, group=group)


def list_opts():
    """The plugin's groups and their options (``get_opt_lists``)."""
    return [(imaged_group, imaged_opts),
            (ceph_group, ceph_opts),
            (boot_group, boot_opts),
            (fault_injection_group, fault_injection_opts)]
