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

"""The RPC reference, the client, the agent and the contract agree.

``imaged.rpcapi.METHODS`` is the contract of every call (version, arguments,
errors). The agent's methods, the client's, the errors ``imaged/`` raises
and ``doc/source/reference/rpc.rst`` are each checked against it here; the
errors the calls really answer are checked by every unit test that drives
the manager (tests/unit/__init__.py) and by the agents' logs in the
functional and scenario suites.
"""

import ast
import inspect
import os
import re
from unittest import mock

import fixtures
import oslo_messaging as messaging

from imaged import context
from imaged import exception
from imaged import manager
from imaged import rpcapi
from tests import unit
from tests.unit import test_client
from tests.unit import test_manager

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
REFERENCE = os.path.join(ROOT, 'doc', 'source', 'reference', 'rpc.rst')
# ``name(a, b)`` (1.0; ``b`` 1.3) at the start of a line: a call's entry.
ENTRY = re.compile(r'^``(\w+)\(([\w, ]*)\)`` \((\d+\.\d+)((?:; [^)]*)?)\)$')
LATER = re.compile(r'``(\w+)`` (\d+\.\d+)')
# Exceptions imaged raises that no call answers, and why.
NOT_ANSWERED = {
    # The client's own, before anything is sent.
    'RPCVersionCapped',
    # Background flattens only: a call's flatten is never cancelled.
    'FlattenCancelled',
}


def _reference():
    with open(REFERENCE) as f:
        return f.read()


def documented_calls():
    """{name: (arguments, {argument: version}, since, errors)}."""
    calls = {}
    lines = _reference().splitlines()
    for number, line in enumerate(lines):
        match = ENTRY.match(line)
        if not match:
            continue
        name, arguments, since, later = match.groups()
        arguments = tuple(a.strip() for a in arguments.split(',')
                          if a.strip())
        versions = dict.fromkeys(arguments, since)
        versions.update(LATER.findall(later))
        # The entry's body: indented lines up to the next entry.
        body = []
        for text in lines[number + 1:]:
            if text and not text.startswith(' '):
                break
            body.append(text)
        body = '\n'.join(body)
        errors = re.search(r'Errors: ((?:``\w+``(?:,\s+)?)+)\.', body)
        calls[name] = (arguments, versions, since,
                       re.findall(r'``(\w+)``', errors.group(1))
                       if errors else None)
    return calls


def documented_errors():
    """{class name: (base named, keyword arguments)} from the table."""
    text = _reference()
    start = text.index('\n=====', text.index('The classes, all'))
    end = text.index('\n=====', start + 1)
    rows, current = {}, None
    for line in text[start:end].splitlines()[2:]:
        if line[:1] not in (' ', ''):
            current = line.split()[0].strip('`')
            rows[current] = line.split(None, 1)[1] if ' ' in line else ''
        elif current:
            rows[current] += ' ' + line.strip()
    found = {}
    for name, cell in rows.items():
        base = re.match(r'\(kind of ``(\w+)``\)\s*', cell)
        if base:
            cell = cell[base.end():]
        found[name] = (base.group(1) if base else None,
                       re.findall(r'``(\w+)``', cell.split(': ', 1)[0]))
    return found


def agent_arguments(method):
    parameters = inspect.signature(
        getattr(manager.ImageAgentManager, method)).parameters
    return tuple(name for name, p in parameters.items()
                 if name not in ('self', 'context')
                 and p.kind is not p.VAR_KEYWORD)


def client_arguments(method):
    parameters = inspect.signature(
        getattr(rpcapi.ImageAgentAPI, method)).parameters
    return tuple(name for name in parameters
                 if name not in ('self', 'ctxt', 'host'))


def error_classes():
    return {name: cls for name, cls in vars(exception).items()
            if isinstance(cls, type)
            and issubclass(cls, exception.ImagedException)
            and cls is not exception.ImagedException}


def raised_in_imaged():
    """The exception classes ``imaged/`` constructs, by name."""
    names = set()
    for directory, _dirs, files in os.walk(os.path.join(ROOT, 'imaged')):
        for file_name in files:
            if not file_name.endswith('.py'):
                continue
            with open(os.path.join(directory, file_name)) as f:
                tree = ast.parse(f.read())
            for node in ast.walk(tree):
                if isinstance(node, ast.Call) and \
                        isinstance(node.func, ast.Attribute) and \
                        isinstance(node.func.value, ast.Name) and \
                        node.func.value.id == 'exception':
                    names.add(node.func.attr)
    return names - {'ImagedException'}


class ContractTest(test_manager.FakeTransportTestCase):

    def test_the_agent_serves_exactly_the_contract_s_calls(self):
        self.assertEqual(set(rpcapi.METHODS), test_client.served_methods())
        for name, method in rpcapi.METHODS.items():
            self.assertEqual(tuple(a for a, _v in method.arguments),
                             agent_arguments(name), name)
            self.assertEqual(tuple(a for a, _v in method.arguments),
                             client_arguments(name), name)

    def test_versions_are_the_api_s(self):
        versions = {v for method in rpcapi.METHODS.values()
                    for v in [method.since] + [v for _a, v in
                                               method.arguments]}
        self.assertEqual(rpcapi.RPC_API_VERSION,
                         max(versions, key=lambda v: tuple(
                             map(int, v.split('.')))))
        self.assertEqual(rpcapi.RPC_API_VERSION,
                         manager.ImageAgentManager.target.version)
        for name, method in rpcapi.METHODS.items():
            for argument, version in method.arguments:
                self.assertGreaterEqual(version, method.since,
                                        '%s(%s)' % (name, argument))

    def test_the_client_sends_the_version_of_what_it_passes(self):
        self.flags(long_rpc_timeout=900, rpc_response_timeout=30)
        api = rpcapi.ImageAgentAPI(self.conf)
        sent = []
        prepare = api._prepare

        def recording_prepare(*args, **kwargs):
            client = prepare(*args, **kwargs)
            client.call = lambda ctxt, method, **kw: sent.append(
                (method, client.target.version, set(kw),
                 client.timeout))
            return client
        api._prepare = recording_prepare
        ctxt = context.RequestContext(user_id='u', project_id='p')
        uuid = test_manager.INSTANCE
        values = {'instance_uuid': uuid, 'image_id': test_manager.IMAGE,
                  'size_gb': 1, 'image_ids': [test_manager.IMAGE],
                  'trusted_certs': ['cert-1']}
        for name, method in rpcapi.METHODS.items():
            sent.clear()
            arguments = [a for a, _v in method.arguments]
            getattr(api, name)(ctxt, 'h1', *[values[a] for a in arguments])
            [(called, version, passed, timeout)] = sent
            self.assertEqual(name, called)
            self.assertEqual(set(arguments), passed)
            self.assertEqual(max([method.since] + [
                v for a, v in method.arguments if a in passed]), version,
                name)
            self.assertEqual(900 if method.long_call else None, timeout,
                             name)

    def test_the_reference_documents_every_call_as_the_contract_says(self):
        documented = documented_calls()
        self.assertEqual(set(rpcapi.METHODS), set(documented))
        for name, method in rpcapi.METHODS.items():
            arguments, versions, since, errors = documented[name]
            self.assertEqual(tuple(a for a, _v in method.arguments),
                             arguments, name)
            self.assertEqual(dict(method.arguments), versions, name)
            self.assertEqual(method.since, since, name)
            self.assertIsNotNone(errors, '%s: no "Errors:" line' % name)
            self.assertEqual(sorted({e.__name__ for e in method.errors}),
                             sorted(errors), name)
        self.assertIn('The RPC API (version %s)' % rpcapi.RPC_API_VERSION,
                      _reference())

    def test_the_reference_s_error_table_is_imaged_exception(self):
        documented = documented_errors()
        classes = error_classes()
        self.assertEqual(sorted(classes), sorted(documented))
        for name, cls in classes.items():
            base, arguments = documented[name]
            parent = cls.__bases__[0]
            self.assertEqual(
                None if parent is exception.ImagedException
                else parent.__name__, base, name)
            self.assertEqual(
                list(dict.fromkeys(re.findall(r'%\((\w+)\)',
                                              str(cls.msg_fmt)))),
                arguments, name)

    def test_every_error_imaged_raises_is_in_some_call_s_contract(self):
        answered = tuple(e for method in rpcapi.METHODS.values()
                         for e in method.errors)
        classes = error_classes()
        raised = raised_in_imaged()
        self.assertTrue(raised)
        self.assertLessEqual(raised, set(classes))
        for name in sorted(raised - NOT_ANSWERED):
            self.assertTrue(issubclass(classes[name], answered),
                            '%s is raised but no call may answer it' % name)


class UndeclaredErrorTest(test_manager.RPCTestCase):
    """An error outside the call's contract: a bug the agent reports."""

    def call_raising(self, error):
        self.manager.image_cache.list = mock.Mock(side_effect=error)
        self.manager.callers.identify = mock.Mock()
        ctxt = context.RequestContext(user_id='u', project_id='p')
        return self.manager.list_cached_images(ctxt)

    def test_the_unit_tests_fail_on_it(self):
        error = exception.ImageNotWritable(image_id='i', reason='r')
        self.assertFalse(rpcapi.declares('list_cached_images', error))
        self.assertRaisesRegex(
            AssertionError, 'list_cached_images answered ImageNotWritable',
            self.call_raising, error)

    def test_the_agent_logs_it_and_still_answers_it(self):
        self.useFixture(fixtures.MockPatchObject(
            manager, 'undeclared', unit.LOGGING_UNDECLARED))
        logged = self.useFixture(fixtures.FakeLogger(name='imaged.manager'))
        error = exception.ImageNotWritable(image_id='i', reason='r')
        self.assertRaises(messaging.ExpectedException, self.call_raising,
                          error)
        self.assertIn('list_cached_images answered ImageNotWritable, which '
                      'its contract in imaged.rpcapi.METHODS does not '
                      'name: please report this bug', logged.output)

    def test_a_declared_error_is_answered_quietly(self):
        logged = self.useFixture(fixtures.FakeLogger(name='imaged.manager'))
        self.assertRaises(messaging.ExpectedException, self.call_raising,
                          exception.StorageError(name='n', pool='p',
                                                 reason='r'))
        self.assertNotIn('does not name', logged.output)
