"""The ``baton`` command line: set up the database, deploy, start instances, send messages, serve."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import click
from flask import Flask

from engine.errors import BatonError, ValidationError
from engine.facade import Engine
from engine.repository import file_kind

ROOT = Path(__file__).resolve().parents[1]


@contextmanager
def _app() -> Iterator[Flask]:
    """The app for one command; its database connections are closed when the command ends."""
    from web.app import create_app

    app = create_app()
    try:
        yield app
    finally:
        app.extensions["baton.engine"].close()


def _engine(app: Flask) -> Engine:
    return app.extensions["baton.engine"]


def _fail(message: str, code: int = 1) -> None:
    click.secho(message, fg="red", err=True)
    sys.exit(code)


def print_problems(problems: Iterable) -> None:
    for p in problems:
        where = p.file + (f":{p.line}" if p.line else "")
        element = f" [{p.element_id}]" if p.element_id else ""
        click.echo(f"  {p.severity}: {where}{element}: {p.message}", err=p.severity == "error")


def _collect(paths: Iterable[str], each: bool) -> list[tuple[str, dict[str, bytes]]]:
    """Bundles to deploy: a directory is one bundle; loose files form one bundle (or one each)."""
    bundles: list[tuple[str, dict[str, bytes]]] = []
    loose: dict[str, bytes] = {}
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            files = {
                f.name: f.read_bytes() for f in sorted(path.iterdir()) if f.is_file() and file_kind(f.name)
            }
            if each:
                bundles += [(name, {name: content}) for name, content in files.items()]
            elif files:
                bundles.append((path.name, files))
        elif path.is_file():
            if each:
                bundles.append((path.name, {path.name: path.read_bytes()}))
            else:
                loose[path.name] = path.read_bytes()
        else:
            _fail(f"no such file or directory: {raw}", 2)
    if loose:
        bundles.append((next(iter(loose)), loose))
    return bundles


@click.group()
def main() -> None:
    """Baton: BPMN workflows for approvals, tickets and CRM."""


@main.command()
def init() -> None:
    """Create the database or upgrade it to the current schema."""
    from engine.migrate import upgrade
    from web.extensions import db

    with _app() as app, app.app_context():
        upgrade(db.engine)
        click.echo(f"database ready: {db.engine.url.render_as_string(hide_password=True)}")


def deploy_paths(app: Flask, paths: Iterable[str], *, each: bool = False, deployed_by: str = "cli") -> int:
    """Deploy bundles and print a report; returns how many bundles failed."""
    failed = 0
    engine = _engine(app)
    for name, files in _collect(paths, each):
        try:
            result = engine.repository.deploy(files, deployed_by=deployed_by, name=name)
        except ValidationError as exc:
            failed += 1
            click.secho(f"✗ {name}: {exc.message}", fg="red", err=True)
            print_problems(exc.problems)
            continue
        except BatonError as exc:
            failed += 1
            click.secho(f"✗ {name}: {exc.message}", fg="red", err=True)
            continue
        for d in result.definitions:
            state = "new version" if d.key in result.new_versions else "unchanged"
            click.echo(f"✓ {name}: {d.key} v{d.version} ({state})")
        print_problems(result.warnings)
    return failed


@main.command()
@click.argument("paths", nargs=-1, required=True)
@click.option("--each", is_flag=True, help="Deploy every file as a bundle of its own.")
@click.option("--as", "user", default="cli", show_default=True, help="Who deploys (audit log).")
def deploy(paths: tuple[str, ...], each: bool, user: str) -> None:
    """Validate and deploy BPMN/DMN/form files or directories (a directory is one bundle)."""
    with _app() as app:
        failed = deploy_paths(app, paths, each=each, deployed_by=user)
    if failed:
        _fail(f"{failed} bundle(s) refused", 1)


def _parse_var(raw: str) -> tuple[str, object]:
    if "=" not in raw:
        raise click.BadParameter(f"expected name=value, got {raw!r}")
    name, value = raw.split("=", 1)
    try:
        return name.strip(), json.loads(value)
    except json.JSONDecodeError:
        return name.strip(), value


@main.command()
@click.argument("key")
@click.option("--var", "variables", multiple=True, help="name=value (JSON values are parsed).")
@click.option("--business-key", default=None)
@click.option("--as", "user", default="cli", show_default=True)
def start(key: str, variables: tuple[str, ...], business_key: str | None, user: str) -> None:
    """Start an instance of the latest version of KEY."""
    try:
        data = dict(_parse_var(v) for v in variables)
        with _app() as app:
            instance = _engine(app).runtime.start(
                key, business_key=business_key, variables=data, started_by=user
            )
    except BatonError as exc:
        _fail(f"cannot start {key}: {exc.message}")
    click.echo(f"started {instance.id} ({key} v{instance.definition_version}): {instance.state}")
    if instance.state == "error":
        _fail(f"the instance failed at {instance.error_element}: {instance.error_message}")


@main.command()
@click.argument("name")
@click.option("--key", "keys", multiple=True, help="Correlation key name=value (JSON values are parsed).")
@click.option("--var", "variables", multiple=True, help="name=value (JSON values are parsed).")
@click.option("--as", "user", default="cli", show_default=True)
def message(name: str, keys: tuple[str, ...], variables: tuple[str, ...], user: str) -> None:
    """Deliver message NAME to the one instance waiting for it (or start one on a message start)."""
    try:
        correlation = dict(_parse_var(k) for k in keys)
        data = dict(_parse_var(v) for v in variables)
        with _app() as app:
            result = _engine(app).messages.correlate(name, keys=correlation, variables=data, actor=user)
            instance = _engine(app).runtime.get(result.instance_id)
    except BatonError as exc:
        _fail(f"cannot deliver message {name}: {exc.message}")
    verb = "started" if result.started else "delivered to"
    click.echo(f"message {name}: {verb} {instance.id} ({instance.definition_key}): {instance.state}")
    if instance.state == "error":
        _fail(f"the instance failed at {instance.error_element}: {instance.error_message}")


@main.command()
@click.argument("name")
@click.option("--var", "variables", multiple=True, help="name=value (JSON values are parsed).")
@click.option("--as", "user", default="cli", show_default=True)
def signal(name: str, variables: tuple[str, ...], user: str) -> None:
    """Broadcast signal NAME to every waiting instance and every process that starts on it."""
    try:
        data = dict(_parse_var(v) for v in variables)
        with _app() as app:
            reached = _engine(app).messages.broadcast_signal(name, variables=data, actor=user)
    except BatonError as exc:
        _fail(f"cannot broadcast signal {name}: {exc.message}")
    click.echo(f"signal {name}: reached {len(reached)} instance(s)")
    for instance_id in reached:
        click.echo(f"  {instance_id}")


def _serve(app: Flask, host: str, port: int) -> None:
    from werkzeug.serving import run_simple

    from engine.scheduler import JobRunner

    if app.config["SCHEDULER_ENABLED"]:
        JobRunner(_engine(app)).start_background()
        click.echo("embedded scheduler: on (BATON_SCHEDULER=off to run it as `baton scheduler` instead)")
    click.echo(f"Baton is serving on http://{host}:{port}/  (Ctrl+C stops)")
    run_simple(host, port, app, threaded=True, use_reloader=False)


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=5000, show_default=True, type=int)
def serve(host: str, port: int) -> None:
    """Serve the web app (one process; for several workers see docs/deployment.md)."""
    with _app() as app:
        _serve(app, host, port)


@main.command()
@click.option(
    "--interval",
    default=0.25,
    show_default=True,
    type=click.FloatRange(min=0, min_open=True),
    help="Seconds between polls.",
)
@click.option(
    "--batch", default=50, show_default=True, type=click.IntRange(min=1), help="Jobs leased per query."
)
@click.option(
    "--lease-seconds",
    default=60.0,
    show_default=True,
    type=click.FloatRange(min=0, min_open=True),
    help="How long leased jobs stay ours: after a crash, other schedulers fire them this much later.",
)
@click.option(
    "--workers",
    default=None,
    type=click.IntRange(min=1),
    help="Jobs this process fires at once.  [default: 4 on PostgreSQL, 1 on SQLite]",
)
def scheduler(interval: float, batch: int, lease_seconds: float, workers: int | None) -> None:
    """Run a standalone scheduler process (several may share one PostgreSQL database)."""
    import logging

    from engine.scheduler import JobRunner

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for chatty in ("apscheduler.executors", "spiff"):  # a line per poll, a line per task state change
        logging.getLogger(chatty).setLevel(logging.WARNING)
    with _app() as app:
        runner = JobRunner(_engine(app), batch=batch, lease_seconds=lease_seconds, workers=workers)
        click.echo(f"scheduler {runner.owner} started (Ctrl+C stops)")
        try:
            runner.run_forever(interval)
        except (KeyboardInterrupt, SystemExit):
            click.echo("scheduler stopped")


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=5000, show_default=True, type=int)
@click.option("--no-serve", is_flag=True, help="Set up the demo data and exit.")
def demo(host: str, port: int, no_serve: bool) -> None:
    """Create the database, deploy processes/, load samples/ and serve."""
    from engine.migrate import upgrade
    from samples.company import SUPPORT_DEPARTMENT, demo_accounts
    from samples.loader import load_samples
    from web.extensions import db

    # the demo company's customer service takes the tickets customers raise on /support/new
    os.environ.setdefault("BATON_SUPPORT_DEPARTMENT", SUPPORT_DEPARTMENT)
    with _app() as app:
        with app.app_context():
            upgrade(db.engine)
        bundles = [str(p) for p in sorted((ROOT / "processes").iterdir()) if p.is_dir()]
        if deploy_paths(app, bundles, deployed_by="demo"):
            _fail("the demo processes did not deploy")
        for line in load_samples(_engine(app)):
            click.echo(line)
        click.echo()
        for line in demo_accounts():  # on every start: the database may be older than this terminal
            click.echo(line)
        click.echo("The ten-minute tour: README.md, section \"Ten-minute tour\" (docs/tour.md).\n")
        if not no_serve:
            _serve(app, host, port)


@main.command()
@click.option(
    "--days",
    type=click.IntRange(min=1),
    default=None,
    help="Days after an instance ended.  [default: BATON_RETENTION_DAYS]",
)
@click.option(
    "--archive-dir",
    type=click.Path(file_okay=False),
    default=None,
    help="Write a gzip JSON file per instance here.  [default: BATON_RETENTION_ARCHIVE_DIR, else purge]",
)
@click.option("--dry-run", is_flag=True, help="List what would go; change nothing.")
def retention(days: int | None, archive_dir: str | None, dry_run: bool) -> None:
    """Remove (or archive) the engine state of instances finished more than N days ago; their
    history, tasks and figures stay (docs/measures.md)."""
    try:
        with _app() as app:
            report = _engine(app).retention.run(
                days=days, archive_dir=archive_dir, dry_run=dry_run, actor="cli"
            )
    except BatonError as exc:
        _fail(f"retention: {exc.message}")
    verb = "would " + report.mode if report.dry_run else report.mode + "d"
    where = f" into {report.archive_dir}" if report.archive_dir else ""
    click.echo(
        f"{verb} the engine state of {len(report.instance_ids)} instance(s) finished before "
        f"{report.cutoff:%Y-%m-%d %H:%M} UTC{where}; attachments removed: {report.attachments_removed}; "
        f"left for the next run: {report.remaining}"
    )
    for instance_id in report.instance_ids if report.dry_run else ():
        click.echo(f"  {instance_id}")


@main.command("settle-measures")
def settle_measures() -> None:
    """Fold the measures' tally rows now (a scheduler does it every minute; docs/measures.md)."""
    with _app() as app:
        folded = _engine(app).measures.settle()
    click.echo(f"folded {folded} tally row(s)")


def _register_subcommands() -> None:
    """Command groups that live in their own modules (they import this one, so register last)."""
    from web.cli_identity import user

    main.add_command(user)


_register_subcommands()

if __name__ == "__main__":  # pragma: no cover
    main(prog_name=os.path.basename(sys.argv[0]))
