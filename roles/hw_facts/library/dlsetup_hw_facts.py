#!/usr/bin/python
# Copyright: dlsetup contributors
# Apache License 2.0 (see the project's pyproject.toml)
"""Ansible module: read-only hardware facts for dlsetup (the parsing lives in module_utils/dlsetup_hwparse/)."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: dlsetup_hw_facts
short_description: Gather dlsetup's hardware facts (OS, CPU, memory, disks, NVIDIA GPUs, driver state)
description:
  - Reads C(/sys), C(/proc), os-release, DMI and the host's C(pci.ids), and runs one
    C(nvidia-smi --query-gpu) call when C(nvidia-smi) is on PATH (a second one only when an old nvidia-smi
    rejects the field list). Changes nothing on the host.
  - GPUs are the NVIDIA display devices seen on PCI (vendor 0x10de, class 0x0300 or 0x0302), so they are
    reported before any driver is installed; nvidia-smi data is merged in by PCI bus id. A GPU nvidia-smi lists
    on a bus id PCI does not show (WSL2 passes GPUs through C(/dev/dxg); some containers see no PCI device) is
    reported too, with C(source=nvidia-smi).
  - WSL2 is told by its kernel release (C(microsoft-standard)) or C(/dev/dxg) and reported as
    C(machine.virtualization=wsl2) with C(machine.virtualization_evidence).
  - A missing or broken driver is not a failure of this module. It is reported as data in
    C(driver.error) with a kind, the first line of nvidia-smi's message and a remedy hint.
  - The result follows the Facts JSON contract of dlsetup's C(docs/architecture.md).
version_added: "0.1.0"
author:
  - dlsetup contributors
options:
  sysfs_root:
    description:
      - Where sysfs is mounted. Tests point it at a fake tree copied from a real host.
    type: path
    default: /sys
  nvidia_proc_dir:
    description:
      - The NVIDIA driver's proc directory (its C(version) file tells the loaded driver and module flavor).
    type: path
    default: /proc/driver/nvidia
  pci_ids_path:
    description:
      - A C(pci.ids) database to name the GPUs with. By default C(/usr/share/misc/pci.ids), then
        C(/usr/share/hwdata/pci.ids); a GPU whose id is in none of them gets a null C(pci_name).
    type: path
  proc_root:
    description:
      - Where procfs is mounted (kernel release, C(version), cpuinfo, meminfo, mountinfo). Tests point it at a
        fake tree.
    type: path
    default: /proc
  dev_root:
    description:
      - The device directory; WSL2 shows its paravirtualized GPU device C(dxg) there.
    type: path
    default: /dev
  wsl_lib_dir:
    description:
      - Where WSL2 mounts the Windows driver's Linux libraries, C(nvidia-smi) among them. It is searched for
        C(nvidia-smi) besides PATH, which under sudo's C(secure_path) does not include it.
    type: path
    default: /usr/lib/wsl/lib
attributes:
  check_mode:
    support: full
  diff_mode:
    support: none
notes:
  - Runs without root; everything it reads is world-readable.
  - Needs Python 3.8 or newer on the managed host.
"""

EXAMPLES = r"""
- name: Gather dlsetup hardware facts
  dlsetup_hw_facts:

- name: Gather facts from a copied sysfs tree (tests)
  dlsetup_hw_facts:
    sysfs_root: /srv/fixtures/sysfs/h200-vm
    nvidia_proc_dir: /srv/fixtures/nvidia-proc/h200-580-open
    pci_ids_path: /srv/fixtures/pci.ids/pci.ids.excerpt

- name: Show the first GPU's link
  ansible.builtin.debug:
    msg: "{{ dlsetup_hw.gpus[0].pcie }}"
  when: dlsetup_hw.gpus | length > 0
"""

RETURN = r"""
ansible_facts:
  description: Facts to add to ansible_facts.
  returned: always
  type: dict
  contains:
    dlsetup_hw:
      description:
        - The host object of dlsetup's Facts JSON (keys os, machine, cpu, memory_mib, disks, gpus, driver,
          warnings); see docs/architecture.md.
      returned: always
      type: dict
      sample:
        os: {id: debian, version: "12", codename: bookworm, kernel: 6.1.0-26-amd64,
             pretty_name: "Debian GNU/Linux 12 (bookworm)"}
        machine: {vendor: null, product: null, virtualization: vm}  # plus virtualization_evidence: [...] on WSL2
        cpu: {model: "Intel(R) Xeon(R) Processor", cores: 16, threads: 16}
        memory_mib: 128887
        disks: [{name: vda, model: null, size_gib: 256, rotational: true, transport: virtio, ssd: false,
                 holds: ["/"]}]
        gpus: [{index: 0, pci_bus_id: "0000:00:06.0", pci_id: "10de:2335", subsystem_id: "10de:18bf",
                pci_class: "0x030200", name: NVIDIA H200, pci_name: null, memory_mib: 143771,
                compute_capability: "9.0", persistence_mode: true, kernel_driver: nvidia,
                visible_to_driver: true,
                pcie: {gen_current: 5, gen_max: 5, width_current: 16, width_max: 16, slot_gen_max: null,
                       slot_width_max: null}}]
                # a GPU behind bridges also has pcie_path, root port first:
                # [{address, pci_id, name (pci.ids), kind: root_port|switch_upstream|switch_downstream,
                #   gen_current, gen_max, width_current, width_max}] (the controller adds pcie_attach)
        driver: {loaded: true, version: 580.159.04, cuda_version: "13.0", kernel_module: open, error: null}
        warnings: []
"""

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.dlsetup_hwparse.collector import collect
from ansible.module_utils.dlsetup_hwparse.textfiles import DEFAULT_PCI_IDS_PATHS, DEFAULT_WSL_LIB_DIR

# nvidia-smi can hang for minutes on a GPU that fell off the bus; coreutils timeout bounds the one call.
NVIDIA_SMI_TIMEOUT_S = 120


def main():
    module = AnsibleModule(
        argument_spec={
            "sysfs_root": {"type": "path", "default": "/sys"},
            "nvidia_proc_dir": {"type": "path", "default": "/proc/driver/nvidia"},
            "pci_ids_path": {"type": "path"},
            "proc_root": {"type": "path", "default": "/proc"},
            "dev_root": {"type": "path", "default": "/dev"},
            "wsl_lib_dir": {"type": "path", "default": DEFAULT_WSL_LIB_DIR},
        },
        supports_check_mode=True,
    )
    params = module.params
    timeout = module.get_bin_path("timeout")

    def run_command(argv):
        if timeout:
            argv = [timeout, "-k", "10", str(NVIDIA_SMI_TIMEOUT_S), *argv]
        rc, out, err = module.run_command(argv, check_rc=False)
        return rc, out, err

    pci_ids_paths = (params["pci_ids_path"],) if params["pci_ids_path"] else DEFAULT_PCI_IDS_PATHS
    facts = collect(
        run_command,
        sysfs_root=params["sysfs_root"],
        nvidia_proc_dir=params["nvidia_proc_dir"],
        pci_ids_paths=pci_ids_paths,
        nvidia_smi_path=module.get_bin_path("nvidia-smi", opt_dirs=[params["wsl_lib_dir"]]),
        proc_root=params["proc_root"],
        dev_root=params["dev_root"],
        wsl_lib_dir=params["wsl_lib_dir"],
    )
    module.exit_json(changed=False, ansible_facts={"dlsetup_hw": facts})


if __name__ == "__main__":
    main()
