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

"""Projects, users, roles and catalog entries in the stack's Keystone.

Run by tools/stack/keystone.sh with the Keystone venv's Python, after
``keystone-manage bootstrap`` (which made the admin user and project, the
roles admin/manager/member/reader/service and Keystone's own endpoints).
Idempotent: what exists is kept (passwords are reset to the given ones),
what is missing is created.  Every request has a timeout.

Input: one JSON object on stdin (see keystone.sh).
"""

import json
import sys

from keystoneauth1.identity import v3
from keystoneauth1 import session as ks_session
from keystoneclient.v3 import client as ks_client

TIMEOUT = 20


def one(items, what):
    items = list(items)
    if len(items) > 1:
        raise SystemExit('keystone_setup: %d %s' % (len(items), what))
    return items[0] if items else None


def ensure_project(ks, domain, name, description):
    project = one(ks.projects.list(domain=domain, name=name),
                  'projects named %s' % name)
    if project is None:
        project = ks.projects.create(name, domain, description=description)
    return project


def ensure_user(ks, domain, project, name, password):
    user = one(ks.users.list(domain=domain, name=name),
               'users named %s' % name)
    if user is None:
        user = ks.users.create(name, domain=domain, password=password,
                               default_project=project)
    else:
        ks.users.update(user, password=password, enabled=True,
                        default_project=project)
    return user


def ensure_endpoints(ks, region, service_type, name, url, description):
    service = one(ks.services.list(type=service_type),
                  '%s services' % service_type)
    if service is None:
        service = ks.services.create(name, service_type,
                                     description=description)
    have = {e.interface: e for e in ks.endpoints.list(service=service)}
    for interface in ('public', 'internal', 'admin'):
        e = have.get(interface)
        if e is None:
            ks.endpoints.create(service, url, interface=interface,
                                region=region)
        elif e.url != url or e.region_id != region:
            ks.endpoints.update(e, url=url, region=region)


def main():
    spec = json.load(sys.stdin)
    auth = v3.Password(auth_url=spec['auth_url'],
                       username=spec['admin_user'],
                       password=spec['admin_password'],
                       project_name=spec['admin_project'],
                       user_domain_id='default', project_domain_id='default')
    sess = ks_session.Session(auth=auth, timeout=TIMEOUT)
    ks = ks_client.Client(session=sess, interface='public',
                          region_name=spec['region'])
    domain = ks.domains.get('default')
    roles = {r.name: r for r in ks.roles.list()}
    for name in ('admin', 'member', 'reader', 'service'):
        if name not in roles:
            roles[name] = ks.roles.create(name)
    projects = {}
    for p in spec['projects']:
        projects[p['name']] = ensure_project(ks, domain, p['name'],
                                             p['description'])
    for u in spec['users']:
        project = projects[u['project']]
        user = ensure_user(ks, domain, project, u['name'], u['password'])
        want = set(u['roles'])
        for assignment in ks.role_assignments.list(user=user,
                                                   project=project):
            role_id = assignment.role['id']
            name = next((n for n, r in roles.items() if r.id == role_id),
                        None)
            if name not in want:
                ks.roles.revoke(role_id, user=user, project=project)
        for name in sorted(want):
            ks.roles.grant(roles[name], user=user, project=project)
    for e in spec['endpoints']:
        ensure_endpoints(ks, spec['region'], e['type'], e['name'], e['url'],
                         e['description'])


if __name__ == '__main__':
    main()
