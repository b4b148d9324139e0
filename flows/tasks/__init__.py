"""Tasks, grouped by the system they touch: ``database`` (the conductor's own
records) and ``compute`` (calls to one compute agent)."""
