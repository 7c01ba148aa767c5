"""The plan stage: what each host should have, decided from its facts and the compatibility data. Pure: no I/O.

- ``data/*.yaml``: the compatibility facts, a source on every row; :mod:`.schema` (their models), :mod:`.load`
  (reading and validating them), :mod:`.consistency` (rows checked against each other);
- :mod:`.catalogue`: GPU identification by PCI id or model name, pci.ids codename fallback;
- :mod:`.pins`: user pins, checked before anything runs;
- :mod:`.request` → :mod:`.resolve` → :class:`~dlsetup.plan.model.Plan`: the resolver, one module per decision
  (:mod:`.driver`, :mod:`.cuda`, :mod:`.frameworks`, :mod:`.machine`; :mod:`.work` is what they share);
- :mod:`.drift`: what changed in the plan since the one last applied.
"""
