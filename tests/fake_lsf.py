#!/usr/bin/env python3
"""A stand-in for IBM LSF's commands that runs each submitted job locally, for testing profiles/dtu-lsf.

Linked as ``bsub``, ``bjobs``, ``bkill``, ``badmin``, ``lsclusters`` and ``bhist`` into a folder on
PATH; it dispatches on the name it was called by. State lives in ``$FAKE_LSF_HOME``: every ``bsub``
command line in ``bsub.log`` (one per line, as the shell passed it), and per job its name, PID and
exit status. It answers exactly the queries snakemake-executor-plugin-lsf makes:

- ``badmin showconf mbd`` and ``lsclusters -w``: the cluster configuration the plugin reads at start;
- ``bsub -J NAME -o LOG ... -cwd DIR "COMMAND"``: starts COMMAND in DIR in the background and prints
  ``Job <ID> is submitted to queue <QUEUE>.``;
- ``bjobs -noheader -o 'jobid stat' -aJ PATTERN``: ``ID RUN|DONE|EXIT`` for matching jobs;
- ``bkill ID...``: terminates those jobs; ``bhist``: no history (no project to guess).
"""

from __future__ import annotations

import contextlib
import fnmatch
import json
import os
import shlex
import signal
import subprocess
import sys
from pathlib import Path

HOME = Path(os.environ["FAKE_LSF_HOME"])
JOBS = HOME / "jobs"


def badmin(args: list[str]) -> int:
    print("MBD configuration at fake time")
    print(f"LSB_SHAREDIR = {HOME / 'share'}")
    print(f"LSF_CONFDIR = {HOME / 'conf'}")
    print("LSF_UNIT_FOR_LIMITS = MB")
    params = HOME / "conf" / "lsbatch" / "fakecluster" / "configdir" / "lsb.params"
    params.parent.mkdir(parents=True, exist_ok=True)
    params.write_text("Begin Parameters\nDEFAULT_QUEUE = hpc  # fake\nEnd Parameters\n")
    return 0


def lsclusters(args: list[str]) -> int:
    print("CLUSTER_NAME   STATUS   MASTER_HOST   ADMIN   HOSTS  SERVERS")
    print("fakecluster    ok       localhost     lsfadmin    1        1")
    return 0


def bsub(args: list[str]) -> int:
    JOBS.mkdir(parents=True, exist_ok=True)
    with open(HOME / "bsub.log", "a") as fh:
        fh.write(shlex.join(args) + "\n")
    opts, i = {}, 0
    while i < len(args) - 1:
        if args[i] in ("-J", "-o", "-e", "-q", "-cwd"):
            opts[args[i]] = args[i + 1]
            i += 2
        else:
            i += 1
    command = args[-1]
    job_id = str(len(list(JOBS.glob("*.json"))) + 1001)
    log = open(opts["-o"], "a")  # noqa: SIM115 (handed to the child)
    rc_file = JOBS / f"{job_id}.rc"
    proc = subprocess.Popen(
        ["bash", "-c", f"{command}\necho $? > {shlex.quote(str(rc_file))}"],
        cwd=opts.get("-cwd"),
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    (JOBS / f"{job_id}.json").write_text(json.dumps({"name": opts["-J"], "pid": proc.pid}))
    print(f"Job <{job_id}> is submitted to queue <{opts.get('-q', 'hpc')}>.")
    return 0


def status(job_id: str) -> str:
    rc_file = JOBS / f"{job_id}.rc"
    if not rc_file.exists() or not rc_file.read_text().strip():
        return "RUN"
    return "DONE" if rc_file.read_text().strip() == "0" else "EXIT"


def bjobs(args: list[str]) -> int:
    pattern = args[args.index("-aJ") + 1] if "-aJ" in args else "*"
    for spec in sorted(JOBS.glob("*.json")):
        if fnmatch.fnmatchcase(json.loads(spec.read_text())["name"], pattern):
            print(spec.stem, status(spec.stem))
    return 0


def bkill(args: list[str]) -> int:
    for job_id in args:
        spec = JOBS / f"{job_id}.json"
        if spec.exists():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(json.loads(spec.read_text())["pid"], signal.SIGTERM)
            print(f"Job <{job_id}> is being terminated")
    return 0


def bhist(args: list[str]) -> int:
    print("No matching job found")
    return 0


if __name__ == "__main__":
    commands = {
        "badmin": badmin,
        "lsclusters": lsclusters,
        "bsub": bsub,
        "bjobs": bjobs,
        "bkill": bkill,
        "bhist": bhist,
    }
    name = Path(sys.argv[0]).name
    if name not in commands:
        sys.exit(f"fake_lsf: unknown command {name}")
    sys.exit(commands[name](sys.argv[1:]))
