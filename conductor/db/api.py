"""The conductor's database: one engine, and a store per concern sharing it.

Each store is handed the engine and sessions it needs (``db.hosts``,
``db.instances``, ``db.reports``, ``db.migrations``, ``db.allocations``,
``db.drains``, ``db.history``, ``db.refusals``). Every reader returns plain dicts
(JSON types), never ORM objects, so results can go straight into RPC replies and
TaskFlow storage. Each change is one transaction.
"""

from sqlalchemy import orm

from conductor.db import allocations
from conductor.db import drains
from conductor.db import engine
from conductor.db import history
from conductor.db import hosts
from conductor.db import instances
from conductor.db import migrations
from conductor.db import refusals
from conductor.db import reports


class Database(object):

    def __init__(self, url):
        self.url = url
        self.engine = engine.create(url)
        self.session = orm.sessionmaker(self.engine, expire_on_commit=False)
        self.hosts = hosts.Hosts(self.session)
        self.instances = instances.Instances(self.session)
        # Holds which guests each host's reports lack, since when (this process).
        self.reports = reports.Reports(self.session)
        self.migrations = migrations.Migrations(self.engine, self.session)
        self.allocations = allocations.Allocations(self.session)
        self.drains = drains.Drains(self.engine, self.session)
        self.history = history.TaskHistory(self.engine, self.session)
        self.refusals = refusals.Refusals(self.session)

    def upgrade(self):
        engine.upgrade(self.engine)
