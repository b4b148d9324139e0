"""Flavors: Ferryman keeps guests' sizes, not flavors; each size in use is
shown as a flavor named after it (common.flavor_id), so clients can name the
flavor of every server."""

from api import faults
from api.handlers import common


def _sizes(ctx):
    sizes = {}
    for inst in ctx.conductor.list_instances():
        sizes.setdefault(common.flavor_id(inst), inst)
    return sizes


def _view(ctx, fid, inst, detail=True):
    out = {'id': fid, 'name': fid, 'links': ctx.link('/flavors/%s' % fid)}
    if not detail:
        if ctx.at_least('2.55'):
            out['description'] = None
        return out
    out.update({'ram': inst['memory_mb'], 'vcpus': inst['vcpus'],
                'disk': inst['disk_gb'], 'OS-FLV-EXT-DATA:ephemeral': 0,
                'swap': 0 if ctx.at_least('2.75') else '', 'rxtx_factor': 1.0,
                'os-flavor-access:is_public': True,
                'OS-FLV-DISABLED:disabled': False})
    if ctx.at_least('2.55'):
        out['description'] = None
    if ctx.at_least('2.61'):
        out['extra_specs'] = {}
    return out


def index(ctx, req):
    return 200, {'flavors': [_view(ctx, f, i, detail=False)
                             for f, i in sorted(_sizes(ctx).items())]}


def detail(ctx, req):
    return 200, {'flavors': [_view(ctx, f, i) for f, i in sorted(_sizes(ctx).items())]}


def show(ctx, req, flavor_id):
    inst = _sizes(ctx).get(flavor_id)
    if inst is None:
        raise faults.not_found('Flavor %s could not be found.' % flavor_id[:80])
    return 200, {'flavor': _view(ctx, flavor_id, inst)}
