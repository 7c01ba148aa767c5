"""Read-only hardware facts: parsers over what a host shows, and the collector that reads a host through them.

This package is shipped to managed hosts as Ansible ``module_utils`` (``roles/hw_facts/module_utils/
dlsetup_hwparse`` is a symlink to it), so every file in it stays **stdlib-only and Python 3.8-compatible**: no
``match``, no ``X | Y`` outside annotations, no third-party imports, and sibling imports are relative.

One module per source:

* :mod:`.common`: values every source shares (integers, PCI bus ids, driver versions, reading a file);
* :mod:`.nvidia_smi`: the ``--query-gpu`` CSV, its sentinels and its failure messages;
* :mod:`.sysfs`: PCI devices, link speed/width, block devices under ``/sys``;
* :mod:`.textfiles`: ``/proc/driver/nvidia/version``, os-release, cpuinfo, meminfo, mountinfo, DMI strings, pci.ids;
* :mod:`.collector`: :func:`~.collector.collect`, which reads a host (or a fake tree) through the others and
  returns the host object of the Facts JSON contract (``docs/architecture.md``).
"""
