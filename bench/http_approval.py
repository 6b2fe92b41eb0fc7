"""Benchmark: the 3-step approval end to end over HTTP, against gunicorn on loopback.

For each backend (PostgreSQL with ``gunicorn -w 2 --threads 4``, SQLite with ``-w 1 --threads 4``)
it makes a fresh database (``baton init``, ``baton deploy processes/expense_approval``), creates
the users (starters ``emp0``.., ``boss`` in group managers, ``cash`` in group finance), takes their
tokens from POST /api/v1/auth/token, starts gunicorn with BATON_SCHEDULER=off, and drives it with
``--clients`` threads (a new connection per request; ``--keep-alive``: one per thread, which
gunicorn pins to one worker, often unevenly) through ``--instances`` instances. One instance is
8 requests, what a client of the API does:

  POST /process-instances                       (as the starter)
  GET  /tasks?scope=mine&instance_id=…          + POST /tasks/{id}/complete   submit
  GET  /tasks?scope=group&instance_id=…         + POST /tasks/{id}/complete   manager_approval (boss)
  GET  /tasks?scope=group&instance_id=…         + POST /tasks/{id}/complete   finance_review (cash)
  GET  /process-instances/{id}                  (as the starter: state, variables, history)

Both servers stay up and are measured in interleaved rounds (the machine is noisy). It prints the
median instances/s of the rounds, next to the ~14 instances/s measured for spiff-arena on this
machine (PostgreSQL, 2 workers), the CPU each instance cost in the gunicorn workers, in PostgreSQL
(every server process, from /proc) and in the client, per-request latency percentiles, and the
ratio to the previous run (bench/results/http_approval.json, rewritten unless ``--no-save``).
``--profile DIR`` records py-spy profiles of the workers (py-spy on PATH: ``pip install py-spy``).

    python -m bench.http_approval [--instances 300] [--rounds 3] [--clients 8] [--backends postgres,sqlite]
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parents[1]
PROCESS = ROOT / "processes" / "expense_approval"
RESULTS = Path(__file__).resolve().parent / "results" / "http_approval.json"
DEFAULT_PG = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
DATABASE = "baton_http_bench"
PASSWORD = "bench-pass-1"
SPIFF_ARENA = 14.0  # instances/s, spiff-arena on this machine (PostgreSQL, 2 workers)
BIN = Path(sys.executable).parent
STEPS = (
    ("submit", "mine", {"amount": 320, "reason": "taxi to customer"}),
    ("manager_approval", "group", {"decision": "approve"}),
    ("finance_review", "group", {"decision": "approve"}),
)
KINDS = ("start", "find task", "complete", "read instance")


# -- the server ---------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_call(
    conn: http.client.HTTPConnection, method: str, path: str, *, headers: dict, body: dict | None = None
) -> tuple[int, dict]:
    payload = None if body is None else json.dumps(body).encode()
    sent = dict(headers)
    if payload is not None:
        sent["Content-Type"] = "application/json"
    conn.request(method, path, body=payload, headers=sent)
    answer = conn.getresponse()
    data = answer.read()
    return answer.status, (json.loads(data) if data else {})


class Server:
    """gunicorn serving ``web.app:create_app()`` on a free loopback port; stopped on exit."""

    def __init__(
        self,
        url: str,
        *,
        workers: int,
        threads: int,
        extra_env: dict | None = None,
        app: str = "web.app:create_app()",
    ) -> None:
        self.url, self.workers, self.threads, self.app = url, workers, threads, app
        self.port = _free_port()
        self.env = {
            **os.environ,
            "DATABASE_URL": url,
            "BATON_SCHEDULER": "off",
            "SECRET_KEY": "bench-secret",
            **(extra_env or {}),
        }
        self.process: subprocess.Popen | None = None

    def __enter__(self) -> Server:
        command = [
            str(BIN / "gunicorn"),
            "-w", str(self.workers),
            "--threads", str(self.threads),
            "-b", f"127.0.0.1:{self.port}",
            "--log-level", "warning",
            self.app,
        ]  # fmt: skip
        self.process = subprocess.Popen(command, cwd=ROOT, env=self.env)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                conn = self.connection()
                status, _ = http_call(conn, "GET", "/api/v1/openapi.json", headers={})
                conn.close()
                if status == 200:
                    self._warm()
                    return self
            except OSError:
                pass
            if self.process.poll() is not None:
                raise RuntimeError(f"gunicorn exited with {self.process.returncode}")
            time.sleep(0.2)
        self.__exit__(None, None, None)
        raise RuntimeError("gunicorn did not answer within 60 s")

    def _warm(self) -> None:
        """One request per worker thread, so no worker builds its app during the measurement."""
        for _ in range(self.workers * self.threads):
            conn = self.connection()
            http_call(conn, "GET", "/api/v1/openapi.json", headers={})
            conn.close()

    def worker_pids(self) -> list[int]:
        found = subprocess.run(
            ["ps", "-o", "pid=", "--ppid", str(self.process.pid)], capture_output=True, text=True
        )
        return [int(p) for p in found.stdout.split()]

    def connection(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)

    def __exit__(self, *exc) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


# -- set-up -------------------------------------------------------------------------------------------


def _fresh_postgres(admin_url: str) -> str:
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 3})
    with admin.connect() as conn:
        conn.execute(text(f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)"))
        conn.execute(text(f"CREATE DATABASE {DATABASE}"))
    admin.dispose()
    return make_url(admin_url).set(database=DATABASE).render_as_string(hide_password=False)


def prepare(url: str, clients: int) -> None:
    """``baton init`` and ``baton deploy`` as an operator would, then the users."""
    env = {**os.environ, "DATABASE_URL": url, "BATON_SCHEDULER": "off", "SECRET_KEY": "bench-secret"}
    for command in (["init"], ["deploy", str(PROCESS)]):
        subprocess.run([str(BIN / "baton"), *command], cwd=ROOT, env=env, check=True, capture_output=True)
    from engine.context import EngineConfig
    from engine.facade import Engine

    engine = Engine.from_url(url, EngineConfig())
    identity = engine.identity
    for i in range(clients):
        identity.create_user(f"emp{i}", PASSWORD, role="employee", groups=["employee"], create_missing=True)
    identity.create_user("boss", PASSWORD, role="manager", groups=["managers"], create_missing=True)
    identity.create_user("cash", PASSWORD, role="employee", groups=["finance"], create_missing=True)
    engine.close()


def _tokens(server: Server, names: list[str]) -> dict[str, dict]:
    conn = server.connection()
    headers = {}
    for name in names:
        status, body = http_call(
            conn, "POST", "/api/v1/auth/token", headers={}, body={"username": name, "password": PASSWORD}
        )
        assert status == 201, body
        headers[name] = {"Authorization": f"Bearer {body['token']}"}
    conn.close()
    return headers


# -- the load -----------------------------------------------------------------------------------------


def _one_instance(
    conn: http.client.HTTPConnection,
    tokens: dict,
    starter: str,
    n: int,
    samples: dict[str, list[float]],
    keep_alive: bool,
) -> None:
    def call(kind: str, method: str, path: str, who: str, body: dict | None = None, expect: int = 200):
        t0 = time.perf_counter()
        status, answer = http_call(conn, method, f"/api/v1{path}", headers=tokens[who], body=body)
        if not keep_alive:
            conn.close()  # the next request connects anew (and lands on whichever worker accepts)
        samples[kind].append(time.perf_counter() - t0)
        if status != expect:
            raise RuntimeError(f"{method} {path} as {who}: {status} {answer}")
        return answer

    body = {"definition_key": "expense_approval", "business_key": f"HB-{n}"}
    instance = call("start", "POST", "/process-instances", starter, body, expect=201)
    for element, scope, data in STEPS:
        who = {"submit": starter, "manager_approval": "boss", "finance_review": "cash"}[element]
        found = call("find task", "GET", f"/tasks?scope={scope}&instance_id={instance['id']}", who)
        (task,) = [t for t in found["items"] if t["element_id"] == element]
        call("complete", "POST", f"/tasks/{task['id']}/complete", who, {"data": data})
    final = call("read instance", "GET", f"/process-instances/{instance['id']}", starter)
    if final["state"] != "completed":
        raise RuntimeError(f"instance {instance['id']} ended {final['state']}")


def drive(
    server: Server, tokens: dict, instances: int, clients: int, first: int = 0, keep_alive: bool = False
) -> dict:
    """``instances`` instances through ``clients`` threads; the wall time and every request's latency."""
    samples: dict[str, list[float]] = {kind: [] for kind in KINDS}
    per_thread = [{kind: [] for kind in KINDS} for _ in range(clients)]
    counter = iter(range(first, first + instances))
    lock, errors = threading.Lock(), []
    barrier = threading.Barrier(clients + 1)

    def client(index: int) -> None:
        conn = server.connection()
        barrier.wait()
        while True:
            with lock:
                n = next(counter, None)
            if n is None or errors:
                break
            try:
                _one_instance(conn, tokens, f"emp{index}", n, per_thread[index], keep_alive)
            except Exception as exc:  # noqa: BLE001 - reported after the run
                errors.append(exc)
        conn.close()

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    barrier.wait()
    began = time.perf_counter()
    for t in threads:
        t.join()
    wall = time.perf_counter() - began
    if errors:
        raise errors[0]
    for collected in per_thread:
        for kind, values in collected.items():
            samples[kind].extend(values)
    return {"wall": wall, "samples": samples}


def _cpu_by_pid(pids: list[int]) -> dict[int, float]:
    ticks = os.sysconf("SC_CLK_TCK")
    found = {}
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        found[pid] = (int(fields[11]) + int(fields[12])) / ticks  # utime + stime
    return found


def _postgres_pids() -> list[int]:
    """The server processes of the bench database, and the WAL writer its commits wait for (other
    databases' backends on this machine are left out)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().strip() != "postgres":
                    continue
                command = (entry / "cmdline").read_text()
            except OSError:
                continue
            if f" {DATABASE} " in command or "walwriter" in command:
                pids.append(int(entry.name))
    return pids


def cpu_snapshot(server: Server, backend: str) -> dict[str, dict[int, float]]:
    """CPU seconds used so far, per process: gunicorn workers, PostgreSQL, this client."""
    client = os.times()
    return {
        "gunicorn": _cpu_by_pid(server.worker_pids()),
        "postgres": _cpu_by_pid(_postgres_pids()) if backend == "postgres" else {},
        "client": {0: client.user + client.system},
    }


def cpu_used(before: dict, after: dict) -> dict[str, float]:
    """Seconds per component between two snapshots (a process that appeared counts from zero)."""
    return {k: sum(seconds - before[k].get(pid, 0.0) for pid, seconds in after[k].items()) for k in after}


def _ms(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] * 1e3


def summarize(runs: list[dict], instances: int) -> dict:
    """Median instances/s over the rounds; latency percentiles over every request of every round."""
    samples = {kind: [v for run in runs for v in run["samples"][kind]] for kind in KINDS}
    everything = [v for values in samples.values() for v in values]
    wall = sum(run["wall"] for run in runs)
    return {
        "instances_per_s": round(statistics.median(run["instances"] / run["wall"] for run in runs), 1),
        "per_round": [round(run["instances"] / run["wall"], 1) for run in runs],
        "requests_per_s": round(len(everything) / wall, 1),
        "latency_ms": {
            kind: {
                "p50": round(_ms(values, 50), 1),
                "p95": round(_ms(values, 95), 1),
                "p99": round(_ms(values, 99), 1),
            }
            for kind, values in {**samples, "all requests": everything}.items()
        },
    }


class Backend:
    """One database behind its own gunicorn, set up and warmed up, measured in rounds."""

    def __init__(self, name: str, url: str, args) -> None:
        self.name, self.url, self.args = name, url, args
        self.workers = args.workers if name == "postgres" else 1
        self.runs: list[dict] = []
        self.cpu = {"gunicorn": 0.0, "postgres": 0.0, "client": 0.0}
        self.server: Server | None = None
        self.next = 0

    def start(self, stack: contextlib.ExitStack) -> None:
        prepare(self.url, self.args.clients)
        server = Server(self.url, workers=self.workers, threads=self.args.threads, app=self.args.app)
        self.server = stack.enter_context(server)
        names = [f"emp{i}" for i in range(self.args.clients)] + ["boss", "cash"]
        self.tokens = _tokens(self.server, names)
        drive(self.server, self.tokens, self.args.warmup, self.args.clients, first=10_000_000)  # warm

    def round(self, instances: int) -> None:
        before = cpu_snapshot(self.server, self.name)
        run = drive(self.server, self.tokens, instances, self.args.clients, self.next, self.args.keep_alive)
        used = cpu_used(before, cpu_snapshot(self.server, self.name))
        self.next += instances
        run["instances"] = instances
        self.runs.append(run)
        for k in self.cpu:
            self.cpu[k] += used[k]

    def figures(self) -> dict:
        done = sum(run["instances"] for run in self.runs)
        figures = summarize(self.runs, done)
        figures["workers"], figures["threads"] = self.workers, self.args.threads
        # CPU per instance by component: where the cores went (postgres: every server process)
        figures["cpu_ms_per_instance"] = {k: round(v / done * 1e3, 1) for k, v in self.cpu.items()}
        wall = sum(run["wall"] for run in self.runs)
        figures["cpu_ms_per_instance"]["wall x cores"] = round(wall * (os.cpu_count() or 1) / done * 1e3, 1)
        return figures


def _start_profilers(server: Server, name: str, directory: Path) -> list[subprocess.Popen]:
    """py-spy on every gunicorn worker for the measured run (``--profile DIR``)."""
    directory.mkdir(parents=True, exist_ok=True)
    spy = shutil.which("py-spy") or str(BIN / "py-spy")
    return [
        subprocess.Popen(
            [
                spy,
                "record",
                "--pid",
                str(pid),
                "--rate",
                "200",
                "--format",
                "raw",
                "--output",
                str(directory / f"{name}-{pid}.txt"),
                "--nonblocking",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        for pid in server.worker_pids()
    ]


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=300)
    parser.add_argument("--clients", type=int, default=8, help="concurrent client threads")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers (PostgreSQL)")
    parser.add_argument("--threads", type=int, default=4, help="threads per gunicorn worker")
    parser.add_argument("--warmup", type=int, default=24)
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds per backend")
    parser.add_argument("--backends", default="postgres,sqlite")
    parser.add_argument("--postgres", default=DEFAULT_PG)
    parser.add_argument("--profile", type=Path, default=None, help="py-spy raw profiles into this dir")
    parser.add_argument("--app", default="web.app:create_app()", help="what gunicorn serves (variants)")
    parser.add_argument(
        "--keep-alive",
        action="store_true",
        help="one connection per client thread (gunicorn then pins each to one worker, often unevenly)",
    )
    parser.add_argument("--no-save", action="store_true")
    args = parser.parse_args(argv)

    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        backends = []
        for name in args.backends.split(","):
            url = _fresh_postgres(args.postgres) if name == "postgres" else f"sqlite:///{tmp}/bench.db"
            backends.append(Backend(name, url, args))
            backends[-1].start(stack)
        profilers = []
        if args.profile:
            for b in backends:
                profilers += _start_profilers(b.server, b.name, args.profile)
        per_round = max(args.instances // args.rounds, 1)
        for _ in range(args.rounds):  # interleaved: the machine's noise hits every backend alike
            for b in backends:
                b.round(per_round)
        for p in profilers:
            p.send_signal(signal.SIGINT)
            p.wait(timeout=120)
        figures = {b.name: b.figures() for b in backends}
    previous = json.loads(RESULTS.read_text()) if RESULTS.exists() else None
    report = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()} {platform.python_implementation()} {platform.python_version()}, "
        f"{os.cpu_count()} cores",
        "instances": per_round * args.rounds,
        "rounds": args.rounds,
        "clients": args.clients,
        "keep_alive": args.keep_alive,
        "load_average": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        "figures": figures,
    }
    _print(report, previous)
    if not args.no_save:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    return report


def _print(report: dict, previous: dict | None) -> None:
    print(
        f"3-step approval over HTTP, {report['instances']} instances per backend in {report['rounds']} "
        f"rounds, {report['clients']} client threads, "
        f"{'keep-alive' if report['keep_alive'] else 'a connection per request'} "
        f"({report['machine']}, load average "
        f"{report['load_average']})"
    )
    print("| backend | gunicorn | instances/s | rounds | × spiff-arena (14/s) | requests/s | × previous |")
    print("|---|---|---:|---|---:|---:|---:|")
    for name, f in report["figures"].items():
        before = (previous or {}).get("figures", {}).get(name)
        vs = f"{f['instances_per_s'] / before['instances_per_s']:.2f}" if before else "–"
        print(
            f"| {name} | -w {f['workers']} --threads {f['threads']} | {f['instances_per_s']:.1f} "
            f"| {', '.join(map(str, f['per_round']))} | {f['instances_per_s'] / SPIFF_ARENA:.1f} "
            f"| {f['requests_per_s']:.0f} | {vs} |"
        )
    print()
    print("| backend | CPU ms per instance: gunicorn workers | PostgreSQL | client | (wall × cores) |")
    print("|---|---:|---:|---:|---:|")
    for name, f in report["figures"].items():
        c = f["cpu_ms_per_instance"]
        pg = f"{c['postgres']:.1f}" if name == "postgres" else "–"
        print(f"| {name} | {c['gunicorn']:.1f} | {pg} | {c['client']:.1f} | {c['wall x cores']:.1f} |")
    print()
    print("| backend | request | p50 (ms) | p95 (ms) | p99 (ms) |")
    print("|---|---|---:|---:|---:|")
    for name, f in report["figures"].items():
        for kind, q in f["latency_ms"].items():
            print(f"| {name} | {kind} | {q['p50']:.1f} | {q['p95']:.1f} | {q['p99']:.1f} |")


if __name__ == "__main__":
    main()
