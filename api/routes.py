"""The route tables: path template (after /v2.1, after /v1) -> {method: handler}."""

from api import faults
from api.handlers import actions
from api.handlers import flavors
from api.handlers import hypervisors
from api.handlers import instance_actions
from api.handlers import migrations
from api.handlers import openapi
from api.handlers import servers
from api.handlers import services
from api.handlers import tasks
from api.handlers import versions


def _not_found(ctx, req, **_vars):
    raise faults.not_found('Ferryman keeps no images; %s is not found.' % req.path)


root = versions.root

ROUTES = [
    ('/', {'GET': versions.show}),
    ('/servers', {'GET': servers.index}),
    ('/servers/detail', {'GET': servers.detail}),
    ('/servers/{server_id}', {'GET': servers.show}),
    ('/servers/{server_id}/action', {'POST': actions.act}),
    ('/servers/{server_id}/migrations', {'GET': migrations.server_index}),
    ('/servers/{server_id}/migrations/{migration_id}', {
        'GET': migrations.server_show, 'DELETE': migrations.abort}),
    ('/servers/{server_id}/migrations/{migration_id}/action', {
        'POST': migrations.server_action}),
    ('/servers/{server_id}/os-instance-actions', {'GET': instance_actions.index}),
    ('/servers/{server_id}/os-instance-actions/{request_id}', {
        'GET': instance_actions.show}),
    ('/os-migrations', {'GET': migrations.index}),
    ('/os-hypervisors', {'GET': hypervisors.index}),
    ('/os-hypervisors/detail', {'GET': hypervisors.detail}),
    ('/os-hypervisors/{hypervisor_id}', {'GET': hypervisors.show}),
    ('/os-services', {'GET': services.index}),
    ('/os-services/{service_id}', {'PUT': services.update}),
    ('/flavors', {'GET': flavors.index}),
    ('/flavors/detail', {'GET': flavors.detail}),
    ('/flavors/{flavor_id}', {'GET': flavors.show}),
    ('/images', {'GET': _not_found}),
    ('/images/detail', {'GET': _not_found}),
    ('/images/{image_id}', {'GET': _not_found}),
]

# The task API; api/openapi-v1.json describes exactly these (tests check it).
V1_ROUTES = [
    ('/moves', {'POST': tasks.move}),
    ('/tasks/{task_id}', {'GET': tasks.show, 'DELETE': tasks.cancel}),
    ('/tasks/{task_id}/complete', {'POST': tasks.complete}),
    ('/servers/{server_id}/tasks', {'GET': tasks.server_index}),
    ('/hosts/{host}/drain', {'POST': tasks.drain}),
    ('/drains/{drain_id}', {'GET': tasks.show_drain}),
    ('/openapi.json', {'GET': openapi.show}),
]

# Paths answered without credentials: the documents that describe the API.
OPEN = {'/v2.1': ('/',), '/v1': ('/openapi.json',)}
