"""The route table: path template (after /v2.1) -> {method: handler}."""

from api import faults
from api.handlers import actions
from api.handlers import flavors
from api.handlers import hypervisors
from api.handlers import instance_actions
from api.handlers import migrations
from api.handlers import servers
from api.handlers import services
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
