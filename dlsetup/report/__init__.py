"""``dlsetup report``: one self-contained HTML page per run, built from what the other commands produce.

The page is the last stage of the data path: it reads facts, plans, verify reports and drift (typed, as the other
stages hand them on, or from their ``--format json`` documents) and renders them; it decides nothing about a host.

- :mod:`.documents`: the JSON documents of ``facts``, ``plan``, ``verify``, ``diff`` and ``provision``, recognised
  by their shape and merged per host (pure);
- :mod:`.links`: the state of each PCIe link: fine, slot-limited, trained down or unknown (pure);
- :mod:`.drawing`: the PCIe tree's and the bandwidth bars' geometry, as plain data (pure);
- :mod:`.build`: one host's page as plain data: its tables, verdict, drawings, drift and history (pure);
- :mod:`.page`: the HTML, from the Jinja2 template shipped in ``templates/`` (autoescaped).
"""
