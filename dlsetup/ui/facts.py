"""Render a host's facts for a terminal (rich). No logic beyond presentation."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from dlsetup.facts.model import HostFacts, PcieHop
from dlsetup.ui.text import show

# Why a GPU nvidia-smi lists is not on PCI, by the machine's virtualization.
OFF_PCI_WHY = {
    "wsl2": "WSL2 passes GPUs through /dev/dxg, not PCI; the Windows driver serves them",
    "container": "the container does not see the PCI devices; the host's driver serves them",
}


def render_facts(console: Console, name: str, facts: HostFacts) -> None:
    os_, machine, cpu = facts.os, facts.machine, facts.cpu
    console.rule(f"[bold]{name}")
    os_name = os_.pretty_name or " ".join(v for v in (os_.id, os_.version) if v) or None
    if os_name and os_.codename and os_.codename not in os_name:
        os_name = f"{os_name} ({os_.codename})"
    console.print(f"OS       {show(os_name)}, kernel {show(os_.kernel)}")
    virt = show(f" [{machine.virtualization}]") if machine.virtualization else ""
    model = " ".join(v for v in (machine.vendor, machine.product) if v) or "unknown (no DMI data)"
    console.print(f"Machine  {show(model)}{virt}")
    for line in machine.virtualization_evidence:
        console.print(f"         {show(line)}")
    console.print(f"CPU      {show(cpu.model)}, {show(cpu.cores)} cores / {show(cpu.threads)} threads")
    console.print(f"Memory   {show(facts.memory_mib, ' MiB')}")
    for disk in facts.disks:
        kind = "SSD" if disk.ssd else ("HDD" if disk.ssd is False else "?")
        holds = f" holds {', '.join(disk.holds)}" if disk.holds else ""
        console.print(
            f"Disk     {disk.name} {show(disk.model)} {show(disk.size_gib, ' GiB')} "
            f"{kind} ({show(disk.transport)}){holds}"
        )
    if not facts.gpus and machine.virtualization == "wsl2":
        console.print(
            "GPUs     [bold]no NVIDIA GPU[/bold]: nvidia-smi lists none (WSL2 takes its GPUs from the Windows "
            "NVIDIA driver: is it installed?)"
        )
    elif not facts.gpus:
        console.print("GPUs     [bold]no NVIDIA GPU[/bold] on PCI")
    else:
        table = Table(show_edge=False, pad_edge=False)
        columns = (
            "#",
            "bus id",
            "pci id",
            "name",
            "memory",
            "CC",
            "gen cur/max",
            "width cur/max/slot",
            "lanes",
            "driver",
        )
        for col in columns:
            table.add_column(col)
        for gpu in facts.gpus:
            pcie = gpu.pcie
            table.add_row(
                show(gpu.index),
                gpu.pci_bus_id if gpu.on_pci else f"{gpu.pci_bus_id} *",
                str(gpu.pci_id),
                show(gpu.name or gpu.pci_name),
                show(gpu.memory_mib, " MiB"),
                show(gpu.compute_capability),
                f"{show(pcie.gen_current)}/{show(pcie.gen_max)}",
                f"x{show(pcie.width_current)}/x{show(pcie.width_max)}/x{show(pcie.slot_width_max)}",
                show(gpu.pcie_attach.to if gpu.pcie_attach else None),
                show(gpu.kernel_driver),
            )
        console.print(table)
        render_pcie_tree(console, facts)
        if facts.gpus_off_pci:
            why = OFF_PCI_WHY.get(machine.virtualization or "", "PCI does not show them")
            console.print(f"         * listed by nvidia-smi, not on PCI: {show(why)}")
    driver = facts.driver
    error = driver.error
    if driver.loaded and machine.virtualization == "wsl2" and driver.kernel_module is None:
        console.print(
            f"Driver   {show(driver.version)} (the Windows driver, through /dev/dxg), CUDA {show(driver.cuda_version)}"
        )
    elif driver.loaded:
        console.print(
            f"Driver   {show(driver.version)} ({show(driver.kernel_module)} kernel module), "
            f"CUDA {show(driver.cuda_version)}"
        )
    elif error is None:
        console.print("Driver   not loaded")
    if error is not None:
        # a loaded module can still fail (version_mismatch, gpu_lost): the failure goes under its version line
        label = "         " if driver.loaded else "Driver   "
        console.print(f"{label}[red]{show(error.kind)}[/red]: {show(error.message)}")
        if error.hint:
            console.print(f"         hint: {show(error.hint)}")
    for warning in facts.warnings:
        console.print(f"[yellow]warning[/yellow]  {show(warning)}")


_HOP = {"root_port": "root port", "switch_upstream": "switch", "switch_downstream": "port"}


def _hop(hop: PcieHop) -> str:
    name = f" ({hop.name})" if hop.name and hop.kind != "switch_downstream" else ""
    return f"{_HOP[hop.kind]} {hop.address}{name} x{show(hop.width_current)}/x{show(hop.width_max)}"


def render_pcie_tree(console: Console, facts: HostFacts) -> None:
    """Each GPU's chain of bridges, root port first, and what more than one GPU shares."""
    for gpu in facts.gpus:
        if not gpu.pcie_path:
            continue
        hops = " > ".join(_hop(hop) for hop in gpu.pcie_path)
        console.print(f"PCIe     {show(hops)} > {gpu.pci_bus_id}")
    for group in facts.pcie_shared:
        what = "switch" if group.kind == "switch" else "root port"
        console.print(f"Shared   {what} {group.via}: {', '.join(group.gpus)}")


def render_host_error(console: Console, name: str, reason: str) -> None:
    console.rule(f"[bold]{name}")
    console.print(f"[bold red]error[/bold red] {show(reason)}")
