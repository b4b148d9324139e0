"""Hypervisor drivers, loaded by stevedore from ``ferryman.virt_drivers``."""

from stevedore import driver as sd_driver

NAMESPACE = 'ferryman.virt_drivers'


def load_driver(conf, host):
    mgr = sd_driver.DriverManager(NAMESPACE, conf.compute.virt_driver,
                                  invoke_on_load=True, invoke_args=(conf, host))
    return mgr.driver
