"""The verify stage: prove the host is what it should be.

- :mod:`.expect`: the expectations (``dlsetup_expect``, ``--expect``), validated before anything runs;
- :mod:`.checks`: the rules, pure functions of facts, expectations and probe results;
- :mod:`.probes`: the snippets run on the host and their typed results;
- :mod:`.suite`: the pytest-testinfra suite that runs them (also on its own:
  ``pytest --pyargs dlsetup.verify.suite``), and :mod:`.suite_runner`, the one place that starts it;
- :mod:`.report`: the per-host report.
"""
