"""A newcomer's first ten minutes, for real: bin/quickstart on a fresh checkout (SQLite and the
filesystem broker, none of the test settings), then README's "Using the API" commands pasted in
order into a second shell. Each works, the training shows epochs within a minute and a half, its
finished job's best weights are registered and served by a replica that finds boxes in a demo
picture (directly, and through the front door), and the checkout is left
with nothing for `git status` to report."""

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import NamedTuple

import pytest

from .support import wait_for

pytestmark = pytest.mark.slow

REPOSITORY = Path(__file__).resolve().parent.parent
HOSTNAME = socket.gethostname()  # the quick start's node worker is named after `hostname`
# What a newcomer's shell has; nothing of the test run's DATABASE_URL, CELERY_BROKER_URL, VAR_DIR, ...
SHELL_VARIABLES = ("PATH", "HOME", "USER", "LOGNAME", "LANG", "LC_ALL", "TMPDIR")


def readme_api_commands():
    """The shell blocks of README's "Using the API" section, in order."""
    text = (REPOSITORY / "README.md").read_text()
    section = text.split("\n## Using the API\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"^```sh\n(.*?)^```$", section, flags=re.MULTILINE | re.DOTALL)
    assert blocks, "README's Using the API section has no ```sh block"
    return "\n".join(blocks)


def fresh_checkout(destination):
    """The repository's files as a clone would have them (tracked, and new files not ignored), in a
    git repository of their own so that `git status` there says what the quick start left behind.
    .venv is linked, not reinstalled: the quick start's pip install finds everything there."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPOSITORY, check=True, capture_output=True,
    ).stdout.decode().split("\0")
    for name in filter(None, listed):
        source = REPOSITORY / name
        if source.is_file():  # a tracked file another change deleted is not in a clone either
            (destination / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, destination / name)
    (destination / ".venv").symlink_to(REPOSITORY / ".venv")
    git = ["git", "-c", "user.name=test", "-c", "user.email=test@example.com"]
    subprocess.run(git + ["init", "-q"], cwd=destination, check=True)
    # .gitignore's "/.venv/" names a folder; the link stands in for it here.
    (destination / ".git" / "info" / "exclude").write_text("/.venv\n")
    subprocess.run(git + ["add", "-A"], cwd=destination, check=True)
    subprocess.run(git + ["commit", "-q", "-m", "checkout"], cwd=destination, check=True)


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def get(port, path, token):
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/api/v1/{path}", headers={"Authorization": f"Token {token}"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        body = response.read().decode()
        return json.loads(body) if response.headers.get_content_type() == "application/json" else body


def processes_in(directory):
    """Ids of the processes working in `directory`: whatever the quick start started, including the
    training child, which runs in a session of its own (so not in the quick start's process group)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cwd = os.readlink(entry / "cwd")
            except OSError:  # gone, or not ours to look at
                continue
            if cwd == str(directory) or cwd.startswith(f"{directory}/"):
                found.append(int(entry.name))
    return found


def stop_quickstart(quickstart, checkout):
    # honcho stops its processes on SIGTERM (each in a session of its own), killing them after 5 s.
    try:
        os.killpg(quickstart.pid, signal.SIGTERM)
    except ProcessLookupError:  # it had exited already
        pass
    try:
        quickstart.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(quickstart.pid, signal.SIGKILL)
        quickstart.wait()
    deadline = time.monotonic() + 15
    while (left := processes_in(checkout)) and time.monotonic() < deadline:
        for pid in left:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.3)
    assert processes_in(checkout) == []


class QuickStart(NamedTuple):
    checkout: Path
    environment: dict  # the newcomer's shell's
    port: int
    log: Path


@pytest.fixture
def quickstart(tmp_path):
    """bin/quickstart running in a fresh checkout, its web app up and this machine's node online."""
    checkout = tmp_path / "checkout"
    checkout.mkdir()
    fresh_checkout(checkout)
    port = free_port()
    # One web and one central worker process: the same product, lighter on a small CI machine.
    environment = {name: os.environ[name] for name in SHELL_VARIABLES if name in os.environ}
    environment.update(WEB_PORT=str(port), ROUTER_PORT=str(free_port()), WEB_WORKERS="1", WORKER_CONCURRENCY="1")
    log = tmp_path / "quickstart.log"
    with open(log, "wb") as output:
        process = subprocess.Popen(
            [str(checkout / "bin" / "quickstart")], cwd=checkout, env=environment,
            stdout=output, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
        )
    try:
        def token():
            assert process.poll() is None, f"the quick start exited:\n{log.read_text()}"
            found = re.search(r"^\s+ci-bot\s+([0-9a-f]{40})$", log.read_text(), flags=re.MULTILINE)
            return found and found[1]

        key = wait_for(token, 150, "the quick start to print the API tokens")

        def node_online():
            assert process.poll() is None, f"the quick start exited:\n{log.read_text()}"
            try:
                nodes = get(port, "nodes/", key)["results"]
            except (urllib.error.URLError, ConnectionError):
                return False
            return any(node["hostname"] == HOSTNAME and node["online"] for node in nodes)

        wait_for(node_online, 120, f"the web app on port {port} and node {HOSTNAME} online")
        yield QuickStart(checkout, environment, port, log)
    finally:
        stop_quickstart(process, checkout)
    status = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=all"], cwd=checkout, check=True,
        capture_output=True, text=True,
    ).stdout
    assert status == "", f"the quick start left files that git sees:\n{status}"


# The quick start's start-up, ten epochs of training on this machine's CPU, and the rest.
@pytest.mark.timeout(1500)
def test_readme_api_commands_work_pasted_in_order_after_the_quick_start(quickstart, tmp_path):
    port = quickstart.port
    kept = tmp_path / "variables.json"
    # -a exports what README assigns, so the variables can be read back; -e stops at the first failure
    # (a booking whose 201 body lacks what `pick` keeps fails there).
    script = (
        "set -euo pipefail -a\n"
        + readme_api_commands()
        + "\npython3 -c 'import json, os, sys; json.dump(dict(os.environ), open(sys.argv[1], \"w\"))' "
        + f"'{kept}'\n"
    )
    pasted = subprocess.run(
        ["bash", "-c", script], cwd=quickstart.checkout, env=quickstart.environment,
        # The serving steps wait for the job to finish its ten epochs and for a replica to be ready.
        capture_output=True, text=True, timeout=1200,
    )
    # Kept with the quick start's log for a failure's post-mortem (pytest keeps the last runs' tmp_path).
    (tmp_path / "pasted.out").write_text(pasted.stdout)
    (tmp_path / "pasted.err").write_text(pasted.stderr)
    assert pasted.returncode == 0, (
        f"stdout:\n{pasted.stdout}\nstderr:\n{pasted.stderr}\nquick start's log: {quickstart.log}"
    )
    out = pasted.stdout
    variables = json.loads(kept.read_text())
    token, bob = variables["TOKEN"], variables["BOB"]

    assert '"name":"node1/gpu0"' in out  # the GPU list
    assert '{"windows":[{"gpus":' in out  # availability
    assert '"conflicts":[{' in out and '"suggestions":[{' in out  # the 409 for a taken GPU
    assert get(port, f"reservations/{variables['NIGHTLY']}/", token)["status"] == "cancelled"

    # The nightly series: the nights within the horizon booked, the second cancelled, the rest later.
    series = get(port, f"series/{variables['SERIES']}/", token)
    assert series["description"] == "every day at 00:00 UTC, 30 times", series
    assert (series["job"]["resume_from"], series["job"]["register_model"]) == ("previous", "boxes-nightly")
    statuses = [o["status"] for o in series["occurrences"]]
    assert len(statuses) == 30 and statuses[1] == "cancelled", statuses
    assert statuses.count("confirmed") >= 25 and set(statuses) <= {"confirmed", "cancelled", "skipped", "later"}
    assert get(port, f"reservations/{series['occurrences'][1]['reservation']}/", token)["status"] == "cancelled"

    job_id = variables["JOB"]
    assert f'{{"id":{job_id},"reservation":' in out  # the job, read right after booking
    job = get(port, f"jobs/{job_id}/", token)
    assert (job["status"], job["epoch"]) == ("completed", 10), job
    assert re.search(r"^\s*10/10\b", get(port, f"jobs/{job_id}/log/", token), flags=re.MULTILINE)

    # The job's weights registered and served: a replica of the serving booking answered with the
    # registered version's boxes, from its cache (preloaded).
    assert '"ref":"boxes:1"' in out
    # curl prints no newline after a body: read the one JSON value that starts there.
    answer, _ = json.JSONDecoder().raw_decode(out, out.rindex('{"model": "boxes"'))
    assert (answer["model"], answer["version"], answer["cache"]) == ("boxes", 1, "hit"), answer
    [result] = answer["results"]
    assert result["width"] == 64 and result["detections"], answer  # boxes at the default confidence
    assert {d["class_name"] for d in result["detections"]} <= {"square", "bar"}
    serving = get(port, f"reservations/{variables['SERVE']}/", token)["serve"]
    assert serving["status"] == "serving" and serving["replicas"][0]["state"] == "ready"
    # Through the front door: the same replica (the only one), named in the answer with its route.
    routed, _ = json.JSONDecoder().raw_decode(out, out.rindex('{"model":"boxes"'))  # compact: the front door's
    assert (routed["version"], routed["replica"], routed["route"]) == (1, int(variables["REPLICA"]), "warm"), routed
    assert routed["results"][0]["detections"] == result["detections"]

    assert '"user":"alice"' in out and '"kind":"preemption_warning"' in out  # the preemptor's 201, the victim's notice
    warnings = [n for n in get(port, "notices/", bob)["results"] if n["kind"] == "preemption_warning"]
    assert len(warnings) == 1, get(port, "notices/", bob)
    victim = get(port, f"reservations/{warnings[0]['reservation']}/", bob)
    assert victim["gpus"] == [int(variables["VICTIM_GPU"])]
    assert victim["preempted_by"] is not None and victim["reclaim_at"] == warnings[0]["data"]["reclaim_at"]
