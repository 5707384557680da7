"""The deployment files, tested here: the Kubernetes manifests against the API schemas
(offline, strict), the HAProxy config by HAProxy itself, and a drain behind HAProxy with
two real ``antiphon serve`` processes on loopback.

The drain test runs in real time: every wait polls a condition with a generous deadline,
none assumes the machine is fast. HAProxy is Debian's package (``make test`` installs it).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from antiphon.testing.agent import silence, speech
from antiphon.testing.poll import until

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
NOWHERE = "http://127.0.0.1:9"  # a proxy that refuses: any network use would fail
HAPROXY_HINT = "install Debian's HAProxy: apt-get install -y haproxy (make test does it)"


def _haproxy() -> str:
    found = shutil.which("haproxy") or shutil.which("haproxy", path="/usr/sbin:/usr/local/sbin")
    if found is None:
        raise RuntimeError(f"no haproxy on this machine: {HAPROXY_HINT}")
    return found


# -- static checks of the files --------------------------------------------------------


def _manifests() -> list[Path]:
    return sorted((DEPLOY / "kubernetes").glob("*.yaml"))


def _documents() -> Iterator[dict[str, Any]]:
    for path in _manifests():
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                yield doc


def test_kubernetes_manifests_validate_strictly_offline() -> None:
    paths = _manifests()
    assert paths, "no manifests in deploy/kubernetes"
    tool = Path(sys.executable).parent / "kubernetes-validate"
    done = subprocess.run(
        [str(tool), "--strict", *map(str, paths)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "HTTPS_PROXY": NOWHERE, "HTTP_PROXY": NOWHERE},  # offline
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count(" passed for resource ") == sum(1 for _ in _documents())


def _kinds() -> dict[str, dict[str, Any]]:
    kinds: dict[str, dict[str, Any]] = {}
    for doc in _documents():
        kinds.setdefault(doc["kind"], doc)
    return kinds


def test_the_deployment_drains_calls_before_the_kubelet_kills_them() -> None:
    kinds = _kinds()
    pod = kinds["Deployment"]["spec"]["template"]["spec"]
    [container] = [c for c in pod["containers"] if c["name"] == "antiphon"]
    args = container["args"]
    drain = float(args[args.index("--drain-timeout") + 1])
    pause = int(container["lifecycle"]["preStop"]["exec"]["command"][-1])
    assert pod["terminationGracePeriodSeconds"] > drain + pause
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/livez"
    hpa = kinds["HorizontalPodAutoscaler"]["spec"]
    [metric] = hpa["metrics"]
    assert metric["type"] == "Pods"
    assert metric["pods"]["metric"]["name"] == "antiphon_calls_active"
    sessions = int(args[args.index("--max-sessions") + 1])
    assert 0 < int(metric["pods"]["target"]["averageValue"]) < sessions


def test_every_pod_signs_tickets_with_the_secret_the_docs_create() -> None:
    """A carrier's media stream may reach another pod than its webhook: same ticket key."""
    pod = _kinds()["Deployment"]["spec"]["template"]["spec"]
    [container] = [c for c in pod["containers"] if c["name"] == "antiphon"]
    env = {e["name"]: e for e in container["env"]}
    ref = env["ANTIPHON_TICKET_SECRET"]["valueFrom"]["secretKeyRef"]
    docs = (ROOT / "docs" / "deploy.md").read_text()
    assert f"--from-literal={ref['key']}=" in docs
    assert f"kubectl create secret generic {ref['name']}" in docs


def test_the_haproxy_config_is_valid() -> None:
    cfg = DEPLOY / "haproxy" / "haproxy.cfg"
    done = subprocess.run(
        [_haproxy(), "-c", "-f", str(cfg)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr
    text = cfg.read_text()
    assert "balance leastconn" in text and "option httpchk GET /readyz" in text
    assert re.search(r"timeout tunnel\s+\d+h", text)


def test_the_dockerfile_runs_the_server_without_dev_extras_nor_root() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert "[dev]" not in text and "USER antiphon" in text
    [cmd] = [line for line in text.splitlines() if line.startswith("CMD ")]
    assert '"serve"' in cmd and "--drain-timeout" not in cmd  # the CLI's default applies
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert ".venv" in ignored and ".git" in ignored


# -- the drain behind HAProxy ------------------------------------------------------------

AGENT = """\
from antiphon.testing.agent import doubles_agent

agent = doubles_agent(["hello there"] * 64, [], default_reply="Okay, bye.")
"""


def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    host: str
    port: int
    proc: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def ready(self, client: httpx.AsyncClient) -> dict[str, Any]:
        r = await client.get(f"{self.url}/readyz", timeout=30)
        body: dict[str, Any] = r.json()
        body["code"] = r.status_code
        return body


@contextlib.contextmanager
def _running(args: list[str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=30)


@contextlib.contextmanager
def _serve(host: str, agent: Path, logs: Path) -> Iterator[Server]:
    port = _free_port(host)
    code = "from antiphon.cli import main; raise SystemExit(main())"
    args = [sys.executable, "-c", code, "serve", str(agent), "--host", host, "--port", str(port)]
    args += ["--vad", "webrtc", "--max-sessions", "20", "--drain-timeout", "240"]
    with _running(args, logs / f"serve-{host}.log") as proc:
        yield Server(host, port, proc)


def _haproxy_config(port: int, servers: list[Server], sock: Path) -> str:
    """The shipped config, with its addresses replaced by the test's."""
    text = (DEPLOY / "haproxy" / "haproxy.cfg").read_text()
    text, n = re.subn(
        r"(?m)^global\n", f"global\n    stats socket {sock} mode 600 level admin\n", text
    )
    assert n == 1
    text, n = re.subn(r"(?m)^    bind \S+$", f"    bind 127.0.0.1:{port}", text)
    assert n == 1
    text = re.sub(r"(?m)^    server .*\n", "", text)
    lines = "".join(f"    server s{i} {s.host}:{s.port}\n" for i, s in enumerate(servers))
    return text.rstrip("\n") + "\n" + lines


async def _haproxy_status(sock: Path) -> dict[str, str]:
    """Each backend server's status (UP, DOWN, ...) from HAProxy's stats socket."""
    reader, writer = await asyncio.wait_for(asyncio.open_unix_connection(str(sock)), 30)
    try:
        writer.write(b"show stat\n")
        await writer.drain()
        raw = await asyncio.wait_for(reader.read(), 30)
    finally:
        writer.close()
        await writer.wait_closed()
    lines = raw.decode().splitlines()
    header = lines[0].lstrip("# ").split(",")
    status: dict[str, str] = {}
    for line in lines[1:]:
        row = dict(zip(header, line.split(","), strict=False))
        if row.get("pxname") == "antiphon_calls" and row.get("svname", "").startswith("s"):
            status[row["svname"]] = row["status"]
    return status


@dataclass
class Call:
    ws: ClientConnection
    events: list[dict[str, Any]] = field(default_factory=list)
    audio_bytes: int = 0

    async def collect(self) -> None:
        with contextlib.suppress(ConnectionClosed):
            async for message in self.ws:
                if isinstance(message, bytes):
                    self.audio_bytes += len(message)
                else:
                    self.events.append(json.loads(message))

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e["type"] == kind]

    async def turn(self) -> None:
        """Say something, wait for the whole answer, hang up (a call that ends well)."""
        for audio in (speech(0.6), silence(0.6)):
            for frame in audio.split(0.02):
                await self.ws.send(frame.data)
                await asyncio.sleep(0.02)
        await until(lambda: self.of("turn"), 120)
        await self.ws.send(json.dumps({"type": "end"}))


class Calls:
    """The test's calls through HAProxy; each collects its events in a task it owns."""

    def __init__(self, url: str, stack: contextlib.AsyncExitStack) -> None:
        self.url = url
        self.stack = stack
        self.readers: list[asyncio.Task[None]] = []
        stack.push_async_callback(self.aclose)

    async def open(self) -> Call:
        ws = await self.stack.enter_async_context(connect(self.url, open_timeout=60))
        call = Call(ws)
        self.readers.append(asyncio.get_running_loop().create_task(call.collect()))
        await until(lambda: call.of("ready") or ws.close_code is not None, 60)
        assert call.of("ready"), f"the call was refused: {ws.close_code} {ws.close_reason}"
        return call

    async def aclose(self) -> None:
        for task in self.readers:
            task.cancel()
        await asyncio.gather(*self.readers, return_exceptions=True)


async def _finish(call: Call) -> None:
    await call.turn()
    await until(lambda: call.ws.close_code is not None, 60)


@pytest.mark.timeout(600)
async def test_a_drain_behind_haproxy_drops_no_call(tmp_path: Path) -> None:
    agent = tmp_path / "agent.py"
    agent.write_text(AGENT)
    sock = tmp_path / "haproxy.sock"
    port = _free_port("127.0.0.1")
    with (
        _serve("127.0.0.2", agent, tmp_path) as a,
        _serve("127.0.0.3", agent, tmp_path) as b,
    ):
        cfg = tmp_path / "haproxy.cfg"
        cfg.write_text(_haproxy_config(port, [a, b], sock))
        haproxy_args = [_haproxy(), "-db", "-f", str(cfg)]
        with _running(haproxy_args, tmp_path / "haproxy.log") as haproxy:
            async with httpx.AsyncClient() as http, contextlib.AsyncExitStack() as stack:

                async def up(server: Server) -> bool:
                    log = tmp_path / f"serve-{server.host}.log"
                    assert server.proc.poll() is None, log.read_text()
                    try:
                        return (await http.get(f"{server.url}/livez", timeout=30)).is_success
                    except httpx.TransportError:
                        return False

                async def both_up() -> bool:
                    return await up(a) and await up(b)

                await _poll(both_up, 120)

                async def haproxy_sees(want: dict[str, str]) -> bool:
                    log = tmp_path / "haproxy.log"
                    assert haproxy.poll() is None, log.read_text()
                    return await _status_is(sock, want)

                await _poll(lambda: haproxy_sees({"s0": "UP", "s1": "UP"}), 60)

                async def active() -> tuple[int, int]:
                    ra, rb = await a.ready(http), await b.ready(http)
                    return ra["active_sessions"], rb["active_sessions"]

                calls = Calls(f"ws://127.0.0.1:{port}/ws/agent", stack)
                # leastconn: four calls, one after the other, two on each process
                first: list[Call] = []
                on_a: list[Call] = []
                for n in range(1, 5):
                    before = await active()
                    call = await calls.open()
                    first.append(call)
                    await _poll(functools.partial(_total_is, active, n), 60)
                    after = await active()
                    assert min(before) == before[0 if after[0] > before[0] else 1]
                    if after[0] > before[0]:
                        on_a.append(call)
                assert await active() == (2, 2)

                # SIGTERM to a: it says 503 at once, HAProxy takes it out, its calls go on
                clock = asyncio.get_running_loop().time
                start = clock()
                a.proc.send_signal(signal.SIGTERM)
                await _poll(lambda: _ready_code(a, http, 503), 60)
                unready = clock() - start
                assert (await a.ready(http))["status"] == "draining"
                await _poll(lambda: haproxy_sees({"s0": "DOWN", "s1": "UP"}), 60)
                print(
                    f"SIGTERM: 503 after {unready:.2f} s, "
                    f"down in HAProxy after {clock() - start:.2f} s"
                )

                # every new call goes to b, and is answered
                later = [await calls.open() for _ in range(3)]
                assert await active() == (2, 5)
                await asyncio.gather(*(_finish(c) for c in later))

                # a's calls end by themselves, answered; a stays up until the last one
                last = on_a.pop()
                await asyncio.gather(*(_finish(c) for c in first if c is not last))
                assert a.proc.poll() is None, "the draining process quit before its last call"
                await _finish(last)
                await _poll(lambda: _exited(a.proc), 120)
                assert a.proc.returncode == 0

                for call in [*first, *later]:
                    agent_said = [e["text"] for e in call.of("transcript") if e["role"] == "agent"]
                    assert agent_said == ["Okay, bye."], call.events
                    assert call.audio_bytes > 0
                    assert call.ws.close_code == 1000, (call.ws.close_code, call.ws.close_reason)
                assert (await b.ready(http))["total_sessions"] == 5

            b.proc.send_signal(signal.SIGTERM)  # no call left: b stops at once
            await _poll(lambda: _exited(b.proc), 120)
            assert b.proc.returncode == 0


async def _poll(condition: Callable[[], Awaitable[bool]], timeout: float) -> None:
    """Await ``condition()`` (a coroutine function) until it is true; bounded."""
    async with asyncio.timeout(timeout):
        while True:
            if await condition():
                return
            await asyncio.sleep(0.1)


async def _status_is(sock: Path, want: dict[str, str]) -> bool:
    try:
        got = await _haproxy_status(sock)
    except OSError:  # HAProxy has not made its socket yet
        return False
    return all(got.get(name, "").startswith(status) for name, status in want.items())


async def _total_is(active: Callable[[], Awaitable[tuple[int, int]]], n: int) -> bool:
    return bool(sum(await active()) == n)


async def _ready_code(server: Server, http: httpx.AsyncClient, code: int) -> bool:
    return bool((await server.ready(http))["code"] == code)


async def _exited(proc: subprocess.Popen[bytes]) -> bool:
    return proc.poll() is not None
