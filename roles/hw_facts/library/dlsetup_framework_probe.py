#!/usr/bin/python
# -*- coding: utf-8 -*-
# Runs on the managed host's Python (3.8+ on Ubuntu 22.04 / Debian 12): stdlib only, no newer syntax.
"""Ansible module: run dlsetup verify's framework probes (PyTorch, JAX) side by side, with the venv's Python."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: dlsetup_framework_probe
short_description: Run the PyTorch and JAX probes of dlsetup verify in the background, then collect their output
description:
  - Read-only. With I(probes), starts each probe script (Python source, given base64-encoded so that no template
    engine reads it) with the venv's interpreter when the venv has one, else with C(python3), all at the same
    time and each with a time limit, in a detached background process; returns at once with the job's folder
    (C(job), private, under the host's temp folder). dlsetup verify starts the probes this way before the
    hardware facts are read (playbooks/verify.yml).
  - With I(collect) (a C(job) folder), waits on the host until that job has written its result, returns it in
    C(job) and removes the folder: what each probe printed and its exit code (dlsetup parses the output,
    dlsetup.verify.probes), whether the venv's interpreter exists, the text of the venv's build record
    (C(dlsetup-build.json)), so that the verification suite needs no call of its own to the host.
  - One round trip each, where Ansible's async needs a file transfer to start and one call per poll and one
    more to clean up. A job never collected (an interrupted verify) is removed by the next start after a day.
options:
  venv:
    description: The framework venv (dl_stack_venv_path); required with I(probes).
    type: path
  probes:
    description: Name to base64-encoded Python source of each probe.
    type: dict
  collect:
    description: The C(job) a start returned, to wait for and collect.
    type: path
  load:
    description: Whether the probes may load the GPUs (sets C(DLSETUP_PROBE_LOAD) to 1 or 0).
    type: bool
    default: true
  timeout:
    description: Seconds each probe may run before it is stopped (its result then says so).
    type: int
    default: 600
"""

EXAMPLES = r"""
- name: Start the framework probes
  dlsetup_framework_probe:
    venv: /opt/dlsetup/venv
    probes: {torch: "{{ dlsetup_probe_torch_b64 }}"}
  register: started

- name: Collect them
  dlsetup_framework_probe:
    collect: "{{ started.job }}"
"""

RETURN = r"""
job:
  description: >-
    Started: the job's folder. Collected: the job's result, C({python, venv_python, build_record, outputs}):
    the interpreter the probes ran with, whether the venv has bin/python, the build record's text (null: none,
    C(unreadable)), per probe C({stdout, stderr, rc, timed_out}); C({failed, msg}) when the job failed or did
    not end in time.
  type: raw
  returned: always
"""

import base64
import glob
import json
import os
import shutil
import subprocess
import tempfile
import time

from ansible.module_utils.basic import AnsibleModule

BUILD_RECORD_NAME = "dlsetup-build.json"
UNREADABLE = "unreadable"
JOB_PREFIX = "dlsetup-probes-"
RESULT_NAME = "result.json"


def read_build_record(venv):
    path = os.path.join(venv, BUILD_RECORD_NAME)
    if not os.path.exists(path):
        return None
    try:
        with open(path, "rb") as handle:
            return handle.read().decode("utf-8", "replace")
    except (IOError, OSError):
        return UNREADABLE


def run_all(python, scripts, env, timeout):
    """Start every script at once; ``{name: {stdout, stderr, rc, timed_out}}`` when all ended or ran out of time."""
    started = {}
    results = {}
    for name, source in scripts.items():
        try:
            started[name] = subprocess.Popen(
                [python, "-c", source], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, close_fds=True
            )
        except OSError as exc:
            results[name] = {"stdout": "", "stderr": "cannot run %s: %s" % (python, exc), "rc": 127, "timed_out": False}
    deadline = time.time() + timeout
    for name, proc in started.items():
        timed_out = False
        try:
            out, err = proc.communicate(timeout=max(0.1, deadline - time.time()))
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
            timed_out = True
        results[name] = {
            "stdout": out.decode("utf-8", "replace"),
            "stderr": err.decode("utf-8", "replace")
            + ("\nstopped after %d s (the probe's time limit)" % timeout if timed_out else ""),
            "rc": proc.returncode,
            "timed_out": timed_out,
        }
    return results


def write_result(job, result):
    tmp = os.path.join(job, RESULT_NAME + ".tmp")
    with open(tmp, "w") as handle:
        handle.write(json.dumps(result))
    os.rename(tmp, os.path.join(job, RESULT_NAME))  # collect never reads half a file


def start(probe, job):
    """Run ``probe()`` in a detached grandchild (its own session, its stdio on /dev/null: Ansible's call returns
    at once and its connection may close) that writes what it returns to ``job``."""
    if os.fork():
        os.wait()  # the first child exits as soon as the grandchild is forked
        return
    try:
        os.setsid()
        if os.fork():
            os._exit(0)
        null = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(null, fd)
        try:
            result = probe()
        except Exception as exc:  # written, so that collect reports it instead of waiting for nothing
            result = {"failed": True, "msg": "the probes could not run: %s" % exc}
        write_result(job, result)
    finally:
        os._exit(0)


def remove_stale(parent, max_age=86400):
    """Jobs of earlier runs that were never collected (an interrupted verify), older than a day."""
    for path in glob.glob(os.path.join(parent, JOB_PREFIX + "*")):
        try:
            if os.stat(path).st_uid == os.getuid() and time.time() - os.stat(path).st_mtime > max_age:
                shutil.rmtree(path, ignore_errors=True)
        except OSError:
            pass


def collect(module, job):
    """Wait on the host for the job's result, return it and remove the job."""
    if not os.path.basename(job).startswith(JOB_PREFIX) or not os.path.isdir(job):
        module.fail_json(msg="%s is not a job of dlsetup_framework_probe" % job)
    deadline = time.time() + module.params["timeout"] + 60
    path = os.path.join(job, RESULT_NAME)
    result = None
    while result is None:
        try:
            with open(path) as handle:
                result = json.loads(handle.read())
        except (IOError, OSError, ValueError):
            if time.time() >= deadline:
                result = {"failed": True, "msg": "the probes did not end within %d s" % module.params["timeout"]}
            else:
                time.sleep(0.05)
    shutil.rmtree(job, ignore_errors=True)
    module.exit_json(changed=False, job=result)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            venv=dict(type="path"),
            probes=dict(type="dict"),
            collect=dict(type="path"),
            load=dict(type="bool", default=True),
            timeout=dict(type="int", default=600),
        ),
        required_one_of=[("probes", "collect")],
        mutually_exclusive=[("probes", "collect")],
        required_by={"probes": "venv"},
        supports_check_mode=True,
    )
    if module.params["collect"]:
        collect(module, module.params["collect"])
    venv = module.params["venv"]
    scripts = {}
    for name, encoded in module.params["probes"].items():
        try:
            scripts[name] = base64.b64decode(str(encoded), validate=True).decode("utf-8")
        except (TypeError, ValueError) as exc:
            module.fail_json(msg="probe %s is not base64-encoded Python source: %s" % (name, exc))
    venv_python = os.path.join(venv, "bin", "python")
    has_venv_python = os.path.exists(venv_python)
    python = venv_python if has_venv_python else "python3"
    env = dict(os.environ)
    env["DLSETUP_PROBE_LOAD"] = "1" if module.params["load"] else "0"

    def probe():
        outputs = run_all(python, scripts, env, module.params["timeout"])
        return {
            "python": python,
            "venv_python": has_venv_python,
            "build_record": read_build_record(venv),
            "outputs": outputs,
        }

    parent = tempfile.gettempdir()
    remove_stale(parent)
    job = tempfile.mkdtemp(prefix=JOB_PREFIX, dir=parent)  # private: mode 0700
    start(probe, job)
    module.exit_json(changed=False, job=job)


if __name__ == "__main__":
    main()
