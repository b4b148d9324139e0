from ferryman.common import conf as ferryman_conf


def test_private_configurations_do_not_share_overrides():
    a = ferryman_conf.make_conf(config_files=[])
    b = ferryman_conf.make_conf(config_files=[], overrides={
        'database.connection': 'sqlite:////tmp/b.sqlite', 'fake.vcpus': 3,
        'host': 'b'})
    assert b.database.connection == 'sqlite:////tmp/b.sqlite'
    assert a.database.connection != b.database.connection
    assert a.fake.vcpus != 3 and b.fake.vcpus == 3
    assert a.host != 'b'


def test_every_option_is_in_the_sample_namespaces():
    from compute_agent import conf as compute_conf
    from conductor import conf as conductor_conf
    groups = {g if isinstance(g, str) else g.name
              for mod in (ferryman_conf, compute_conf, conductor_conf)
              for g, _ in mod.list_opts()}
    assert groups == {'DEFAULT', 'conductor', 'database', 'compute', 'fake', 'libvirt',
                      'jobboard', 'pci', 'auth'}
