"""Hosts as the scheduler and operators see them: what their agents reported, with
their usage, nested providers and outbound migrations."""

import collections

import sqlalchemy as sa

from conductor import placement
from conductor.db import migrations
from conductor.db import models
from conductor.db import rows
from ferryman.common import exception
from ferryman.common import schemas


def usage(s, host):
    """Resource -> what allocations on ``host`` use of it."""
    row = s.execute(sa.select(*[sa.func.coalesce(sa.func.sum(
        getattr(models.Allocation, r)), 0) for r in schemas.RESOURCES]).where(
        models.Allocation.host == host)).one()
    return dict(zip(schemas.RESOURCES, (int(v) for v in row)))


def providers(s, host=None, only=None):
    """Host -> its nested providers (dicts), each with what is used of it (of
    ``host``, or of the hosts in ``only``, when given)."""
    # Core rows, not ORM objects: the scheduler reads every host's providers for
    # every request.
    q = sa.select(models.Provider.__table__).order_by(models.Provider.name)
    uq = sa.select(models.NestedAllocation.provider,
                   models.NestedAllocation.resources)
    if host is not None:
        q = q.where(models.Provider.host == host)
        uq = uq.where(models.NestedAllocation.host == host)
    if only is not None:
        q = q.where(models.Provider.host.in_(only))
        uq = uq.where(models.NestedAllocation.host.in_(only))
    used = collections.defaultdict(collections.Counter)
    unreadable = collections.defaultdict(list)
    for provider, resources in s.execute(uq):
        if schemas.problems('resources', resources):
            unreadable[provider].append(schemas.shown(resources))
        else:
            used[provider].update(resources)
    out = collections.defaultdict(list)
    for p in s.execute(q):
        d = rows.row_dict(p)
        d['used'] = dict(used[p.name])
        d['problems'] = ['provider %s: %s' % (p.name, text) for text in
                         schemas.problems('provider', d)] + [
            'provider %s: an allocation of %s on it cannot be interpreted' % (
                p.name, r) for r in unreadable[p.name]]
        out[p.host].append(d)
    return out


class Hosts(object):

    def __init__(self, session):
        self.session = session

    @staticmethod
    def _dicts(s, hosts, down_after, only=None):
        """Hosts (rows of their table) as dicts with their usage, nested providers
        and outbound migrations: a few grouped queries whatever the number of
        hosts (those named in ``only``, when given)."""
        usage_q = sa.select(models.Allocation.host, *[sa.func.coalesce(
            sa.func.sum(getattr(models.Allocation, r)), 0)
            for r in schemas.RESOURCES]).group_by(models.Allocation.host)
        if only is not None:
            usage_q = usage_q.where(models.Allocation.host.in_(only))
        used = {row[0]: dict(zip(schemas.RESOURCES, (int(v) for v in row[1:])))
                for row in s.execute(usage_q)}
        outbound = migrations.active_by_source(s, only)
        nested = providers(s, only=only)
        now = rows.utcnow()
        result = []
        for host in hosts:
            out = rows.row_dict(host)
            out['used'] = used.get(host.name, dict.fromkeys(schemas.RESOURCES, 0))
            out['up'] = not host.forced_down and \
                (now - host.last_seen).total_seconds() <= down_after
            out['migrations_out'] = outbound.get(host.name, 0)
            out['providers'] = nested.get(host.name, [])
            # A row nothing can interpret (written by hand, or before reports
            # were checked) is listed with its problems, its capacity none: the
            # scheduler's record filter refuses it, the audit reports it.
            out['problems'] = schemas.problems('host', out) + [
                text for p in out['providers'] for text in p['problems']]
            out['capacity'] = {r: 0 if out['problems'] else
                               placement.capacity(out, r) for r in schemas.RESOURCES}
            result.append(out)
        return result

    def get(self, name, down_after=60):
        with self.session() as s:
            host = s.execute(sa.select(models.Host.__table__).where(
                models.Host.name == name)).first()
            if host is None:
                raise exception.HostNotFound(host=name)
            return self._dicts(s, [host], down_after, only=[name])[0]

    def get_many(self, names, down_after=60):
        """Host name -> the host as get() gives it, for those of ``names`` that
        exist, read together (one set of grouped queries)."""
        with self.session() as s:
            found = s.execute(sa.select(models.Host.__table__).where(
                models.Host.name.in_(names))).all()
            return {h['name']: h for h in self._dicts(
                s, found, down_after, only=[r.name for r in found])}

    def facts(self, *names):
        """Host name -> its own row (features, paths, capacity as reported),
        without the usage, providers and migrations get() adds: one query, for
        readers that need only what the agent reported."""
        with self.session() as s:
            found = {h.name: rows.to_dict(h) for h in s.scalars(
                sa.select(models.Host).where(models.Host.name.in_(names)))}
        for name in names:
            if name not in found:
                raise exception.HostNotFound(host=name)
        return found

    def list(self, down_after=60):
        with self.session() as s:
            hosts = s.execute(sa.select(models.Host.__table__).order_by(
                models.Host.name)).all()
            return self._dicts(s, hosts, down_after)

    def set_enabled(self, name, enabled, reason=None):
        with self.session.begin() as s:
            host = s.get(models.Host, name)
            if host is None:
                raise exception.HostNotFound(host=name)
            host.enabled = enabled
            host.disabled_reason = None if enabled else reason

    def set_forced_down(self, name, forced_down):
        with self.session.begin() as s:
            host = s.get(models.Host, name)
            if host is None:
                raise exception.HostNotFound(host=name)
            host.forced_down = forced_down
