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

"""Purge of images deleted in Glance: only a clear answer deletes."""

from unittest import mock

from imaged import exception
from imaged.image import record as image_record
from imaged.imagecache import eviction as purge
from tests import base

A = '0b1e2f4a-1d2c-4e5f-8a9b-0c1d2e3f4a01'
B = '0b1e2f4a-1d2c-4e5f-8a9b-0c1d2e3f4a02'
C = '0b1e2f4a-1d2c-4e5f-8a9b-0c1d2e3f4a03'


class FakeGlance:
    """``show`` answers from a dict: a record, or an exception to raise."""

    def __init__(self, answers):
        self.answers = answers
        self.asked = []
        self.admin = True  # imaged's user sees every image

    def sees_every_image(self):
        return self.admin

    def show(self, context, image_id):
        self.asked.append((image_id, context.is_admin, context.auth_token))
        answer = self.answers.get(image_id, {'status': 'active'})
        if isinstance(answer, Exception):
            raise answer
        return image_record.ImageRecord.from_glance(answer, image_id)


class FakeRootDisks:
    """``purge_image`` as the pool provides it; RBD bases with clones stay
    until ``clones`` says otherwise."""

    def __init__(self):
        self.files = set()
        self.rbd = set()
        self.clones = set()
        self.purged = []

    def purge_image(self, image_id, reason):
        self.purged.append((image_id, reason))
        removed = []
        if image_id in self.files:
            self.files.discard(image_id)
            removed.append({'image_id': image_id, 'where': 'file'})
        if image_id in self.rbd and image_id not in self.clones:
            self.rbd.discard(image_id)
            removed.append({'image_id': image_id, 'where': 'rbd'})
        return removed

    def cached(self):
        return sorted(self.files | self.rbd)


class PurgeTest(base.TestCase):

    def setUp(self):
        super().setUp()
        self.flags(glance_check_interval=100, group='image_cache')
        self.now = 1000.0
        self.glance = FakeGlance({})
        self.disks = FakeRootDisks()
        self.notifications = mock.Mock()
        self.purge = purge.DeletedImages(
            self.conf, self.glance, self.disks.purge_image, self.notifications,
            clock=lambda: self.now)

    def cache(self, *image_ids, rbd=True):
        self.disks.files.update(image_ids)
        if rbd:
            self.disks.rbd.update(image_ids)

    def run_purge(self):
        return self.purge.run(self.disks.cached(), sorted(self.disks.rbd))

    def evictions(self):
        return [c.args for c in self.notifications.evict.call_args_list]

    def test_404_removes_file_and_rbd_base_with_notifications(self):
        self.cache(A, B)
        self.glance.answers[A] = exception.ImageNotFound(image_id=A)
        removed = self.run_purge()
        self.assertEqual([{'image_id': A, 'where': 'file'},
                          {'image_id': A, 'where': 'rbd'}], removed)
        self.assertEqual([B], self.disks.cached())
        self.assertEqual([(A, 'file', 'deleted'), (A, 'rbd', 'deleted')],
                         self.evictions())

    def test_404_removes_nothing_when_imaged_cannot_see_every_image(self):
        # Without the admin role, a private image of another project is a
        # 404 too: only a record that says "deleted" purges then.
        self.glance.admin = False
        self.cache(A, B)
        self.glance.answers[A] = exception.ImageNotFound(image_id=A)
        self.glance.answers[B] = {'status': 'deleted'}
        removed = self.run_purge()
        self.assertEqual([{'image_id': B, 'where': 'file'},
                          {'image_id': B, 'where': 'rbd'}], removed)
        self.assertEqual([A], self.disks.cached())

    def test_gone_statuses_remove_others_keep(self):
        self.cache(A, B, C)
        for status in ('active', 'queued', 'importing', 'deactivated'):
            self.glance.answers[A] = {'status': status}
            self.now += 100
            self.run_purge()
            self.assertEqual([A, B, C], self.disks.cached(), status)
        self.glance.answers.update({A: {'status': 'deleted'},
                                    B: {'status': 'killed'},
                                    C: {'status': 'pending_delete'}})
        self.now += 100
        self.run_purge()
        self.assertEqual([], self.disks.cached())

    def test_glance_unreachable_keeps_everything_and_asks_no_more(self):
        self.cache(A, B, C)
        self.glance.answers[A] = exception.BackendUnavailable(
            backend='Glance', reason='connection refused')
        self.glance.answers[B] = exception.ImageNotFound(image_id=B)
        self.assertEqual([], self.run_purge())
        self.assertEqual([A, B, C], self.disks.cached())
        self.assertEqual([A], [i for i, _a, _t in self.glance.asked])
        self.assertEqual([], self.disks.purged)
        # Back again: it asks at once, not an interval later.
        del self.glance.answers[A]
        self.run_purge()
        self.assertEqual([A, C], self.disks.cached())

    def test_forbidden_keeps_the_image_and_goes_on(self):
        self.cache(A, B)
        self.glance.answers[A] = exception.ImageNotAuthorized(image_id=A)
        self.glance.answers[B] = exception.ImageNotFound(image_id=B)
        self.run_purge()
        self.assertEqual([A], self.disks.cached())

    def test_an_unexpected_glance_error_keeps_everything(self):
        self.cache(A)
        self.glance.answers[A] = exception.ImageDownloadFailed(
            image_id=A, reason='HTTP 500')
        self.run_purge()
        self.assertEqual([A], self.disks.cached())

    def test_each_image_is_asked_about_once_per_interval(self):
        self.cache(A)
        self.run_purge()
        self.now += 99
        self.run_purge()
        self.assertEqual(1, len(self.glance.asked))
        self.now += 1
        self.run_purge()
        self.assertEqual(2, len(self.glance.asked))

    def test_uses_imaged_own_credentials(self):
        self.cache(A)
        self.run_purge()
        self.assertEqual([(A, True, None)], self.glance.asked)

    def test_an_rbd_base_with_clones_goes_once_unused(self):
        self.cache(A)
        self.disks.clones.add(A)
        self.glance.answers[A] = exception.ImageNotFound(image_id=A)
        self.assertEqual([{'image_id': A, 'where': 'file'}], self.run_purge())
        self.assertEqual([A], self.disks.cached())
        # Next runs retry the removal without asking Glance again.
        self.assertEqual([], self.run_purge())
        self.disks.clones.clear()
        self.assertEqual([{'image_id': A, 'where': 'rbd'}], self.run_purge())
        self.assertEqual([], self.disks.cached())
        self.assertEqual(1, len(self.glance.asked))

    def test_a_base_no_longer_listed_is_still_removed_once_unused(self):
        self.cache(A)
        self.disks.clones.add(A)
        self.glance.answers[A] = exception.ImageNotFound(image_id=A)
        self.run_purge()
        # The cache forgot A with its file; the base is still in the pool.
        self.assertEqual([], self.purge.run([], [A]))
        self.disks.clones.clear()
        self.assertEqual([{'image_id': A, 'where': 'rbd'}],
                         self.purge.run([], [A]))
        self.assertEqual([], self.purge.run([], []))
        self.assertEqual(1, len(self.glance.asked))

    def test_a_failed_removal_is_retried_next_run(self):
        self.cache(A)
        self.glance.answers[A] = exception.ImageNotFound(image_id=A)
        with mock.patch.object(self.purge, 'purge_image', side_effect=(
                exception.BackendUnavailable(backend='Ceph',
                                             reason='timeout'))):
            self.assertEqual([], self.run_purge())
        self.assertEqual([A], self.disks.cached())
        self.run_purge()
        self.assertEqual([], self.disks.cached())

    def test_zero_interval_turns_the_check_off(self):
        self.flags(glance_check_interval=0, group='image_cache')
        self.cache(A)
        self.glance.answers[A] = exception.ImageNotFound(image_id=A)
        self.run_purge()
        self.assertEqual([], self.glance.asked)
        self.assertEqual([A], self.disks.cached())


class CleanupTaskTest(base.TestCase):

    def eviction(self, disks, glance, storage, notifications):
        """The cleanup run over fakes: ``disks`` holds the cached copies."""
        files = mock.Mock()
        files.list = lambda: (
            [{'image_id': i, 'where': 'file'} for i in disks.files] +
            [{'image_id': i, 'where': 'rbd'} for i in disks.rbd])
        run = purge.Eviction(self.conf, glance, storage, files,
                             notifications)
        run.clean_rbd_bases = mock.Mock(return_value=[C])
        run.forget_removed_bases = mock.Mock()
        run.deleted.purge_image = disks.purge_image
        return run

    def test_the_cleanup_task_evicts_and_purges_with_notifications(self):
        disks = FakeRootDisks()
        disks.files.update([A])
        disks.rbd.update([A, B])
        glance = FakeGlance({A: exception.ImageNotFound(image_id=A)})
        notifications = mock.Mock()
        storage = mock.Mock()
        storage.bases.image_ids.return_value = [A, B]
        run = self.eviction(disks, glance, storage, notifications)
        # An RBD base's record ageing out is no eviction: only files are.
        run.clean_files = mock.Mock(return_value=[
            {'image_id': C, 'where': 'file', 'reason': 'size'}])
        run.run(pool_wide=True)
        self.assertEqual([(A, 'deleted')], disks.purged)
        self.assertEqual([A, B], sorted(i for i, _a, _t in glance.asked))
        self.assertEqual([(C, 'file', 'size'), (C, 'rbd', 'age'),
                          (A, 'file', 'deleted'), (A, 'rbd', 'deleted')],
                         [c.args for c in
                          notifications.evict.call_args_list])

    def test_only_the_cleanup_host_touches_what_the_pool_shares(self):
        disks = FakeRootDisks()
        disks.files.update([A])
        disks.rbd.update([B])
        glance = FakeGlance({A: exception.ImageNotFound(image_id=A),
                             B: exception.ImageNotFound(image_id=B)})
        storage = mock.Mock()
        run = self.eviction(disks, glance, storage, mock.Mock())
        run.clean_files = mock.Mock(return_value=[])
        run.run(pool_wide=False)  # the role is another host's
        run.clean_rbd_bases.assert_not_called()
        storage.partials.sweep_abandoned.assert_not_called()
        storage.bases.image_ids.assert_not_called()
        # Its own base file of a deleted image still goes; the base in
        # the pool is the cleanup host's to remove.
        self.assertEqual([A], [i for i, _a, _t in glance.asked])
        self.assertEqual([(A, 'deleted')], disks.purged)


class CleanupRoleTest(base.TestCase):

    def test_one_host_at_a_time_and_the_role_moves_when_it_dies(self):
        from imaged.storage import rbd as rbd_storage
        from tests.unit import fakes
        cluster = fakes.FakeCluster()
        a, b = (rbd_storage.RBDDriver(self.conf, host,
                                      rados_module=cluster.rados,
                                      rbd_module=cluster.rbd)
                for host in ('host-a', 'host-b'))
        self.assertTrue(a.holds_cleanup_role(600))
        self.assertFalse(b.holds_cleanup_role(600))
        self.assertTrue(a.holds_cleanup_role(600))  # renewed, kept
        # host-a dies: nobody renews its lease, which runs out.
        _kind, held = cluster.objects[('vms', 'imaged.cleanup')][
            'imaged-role']
        for cookie in held:
            held[cookie] = 0
        self.assertTrue(b.holds_cleanup_role(600))
        self.assertFalse(a.holds_cleanup_role(600))
