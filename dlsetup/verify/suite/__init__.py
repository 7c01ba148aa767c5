"""dlsetup's pytest-testinfra verification suite.

Run by ``dlsetup verify``, or on its own:
    pytest --pyargs dlsetup.verify.suite --hosts=ansible://GROUP --ansible-inventory=inventory/hosts.yml
"""
