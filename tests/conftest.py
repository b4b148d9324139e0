"""A skipped test is not a pass: the run fails if anything was skipped."""


def pytest_sessionfinish(session, exitstatus):
    reporter = session.config.pluginmanager.get_plugin('terminalreporter')
    skipped = reporter.stats.get('skipped', []) if reporter else []
    if skipped and session.exitstatus == 0:
        reporter.write_line('FAILED: %d test(s) skipped; skips are failures here'
                            % len(skipped), red=True)
        session.exitstatus = 1
