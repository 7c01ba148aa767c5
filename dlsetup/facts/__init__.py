"""The facts stage: what each host is.

- :mod:`dlsetup.facts.hwparse`: stdlib-only parsers and the collector, shipped to hosts as the module's
  ``module_utils``;
- :mod:`dlsetup.facts.model`: the Facts JSON host object as typed models (validated on the way in);
- :mod:`dlsetup.facts.record`: what a provision leaves on the host for the next run;
- :mod:`dlsetup.facts.gather`: run ``facts.yml`` through the run stage and read both back;
- :mod:`dlsetup.facts.drift`: what changed in the hardware since the last provision.
"""
