"""The daemon's life: start-up without its backends, SIGHUP, SIGTERM."""

import os
import shutil
import signal
import tempfile
import threading
import time
import uuid

from oslo_utils import units
import testtools

from imaged import exception
from imaged import rpcapi
from tests.functional import base


class DaemonLifeTest(testtools.TestCase):

    def setUp(self):
        super().setUp()
        base.configure_client()
        self.api = rpcapi.ImageAgentAPI(base.CONF)
        self.ctxt = base.user_context()
        self.workdir = tempfile.mkdtemp(prefix='imaged-life-')
        self.addCleanup(shutil.rmtree, self.workdir, ignore_errors=True)

    def start(self, options=None):
        host = 'life-%s' % uuid.uuid4().hex[:8]
        daemon = base.Daemon(self.workdir, host, options)
        daemon.start()
        self.addCleanup(daemon.kill)
        caps = base.FunctionalTestCase.wait_until_serving(
            self.api, self.ctxt, host, daemon)
        return daemon, caps

    def test_starts_and_reports_unreachable_backends(self):
        ceph_conf = os.path.join(self.workdir, 'nowhere.conf')
        with open(ceph_conf, 'w') as f:
            f.write('[global]\nmon host = 127.0.0.1:1\n')
        daemon, caps = self.start({
            'rbd': {'ceph_conf': ceph_conf, 'connect_timeout': '2'},
            'glance': {'endpoint_override': 'http://127.0.0.1:9/'}})
        problems = ' '.join(caps['problems'])
        self.assertIn('Ceph', problems)
        self.assertIn('Glance', problems)
        self.assertIsNone(caps['fsid'])
        self.assertIn('Not ready to make root disks', daemon.log())
        e = self.assertRaises(exception.BackendUnavailable,
                              self.api.delete_root_disk, self.ctxt,
                              daemon.host, str(uuid.uuid4()))
        self.assertIn('Ceph', str(e))

    def test_sighup_rereads_mutable_options(self):
        daemon, _caps = self.start()
        with open(daemon.config_file, 'a') as f:
            f.write('\n[DEFAULT]\nmax_root_disk_gb = 3\n')
        daemon.signal(signal.SIGHUP)
        instance = str(uuid.uuid4())

        def refused_as_too_big():
            try:
                self.api.create_root_disk(self.ctxt, daemon.host, instance,
                                          str(uuid.uuid4()), 5)
            except exception.InvalidInput as e:
                return '1..3' in str(e)
            except exception.ImageNotFound:
                return False
            except Exception:  # the worker is restarting
                return False
        base.wait_for(refused_as_too_big, 60, interval=1,
                      what='the new max_root_disk_gb to apply')
        self.assertIsNone(daemon.process.poll())

    def test_sigterm_lets_the_call_in_flight_finish(self):
        class _Test:
            addCleanup = self.addCleanup
        glance = base.Glance(_Test())
        image = glance.create(os.urandom(units.Mi) * 256, backend='local')
        daemon, _caps = self.start({'glance': {'progress_interval': '1'}})
        ceph = base.Ceph()
        self.addCleanup(ceph.close)
        instance = str(uuid.uuid4())
        self.addCleanup(ceph.remove, '%s_disk' % instance)
        result = {}

        def create():
            try:
                result['disk'] = self.api.create_root_disk(
                    self.ctxt, daemon.host, instance, image['id'], 1)
            except Exception as e:
                result['error'] = e
        caller = threading.Thread(target=create)
        caller.start()
        base.wait_for(lambda: 'Downloading image %s' % image['id']
                      in daemon.log() or 'disk' in result, 60,
                      what='the download to start')
        time.sleep(0.2)
        daemon.signal(signal.SIGTERM)
        caller.join(120)
        daemon.process.wait(120)
        self.assertNotIn('error', result)
        self.assertEqual('download', result['disk']['strategy'])
        self.assertIn('%s_disk' % instance, ceph.names())
