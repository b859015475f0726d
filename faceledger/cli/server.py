"""``faceledger serve`` (the Rekognition-compatible HTTP API) and ``faceledger keys`` (its
access keys)."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from typing import Annotated, Any

import typer

from faceledger.cli import render
from faceledger.cli.common import JsonOption, command_group, open_service, reports_errors
from faceledger.service.access import Role

keys_app = command_group(help="Access keys of the HTTP API (SigV4 credentials).", no_args_is_help=True)


@reports_errors
def serve(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8080,
    worker_threads: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Requests that analyse an image (detect, compare, index, search by image) run at once "
            "[default: one per core].",
        ),
    ] = None,
    quick_threads: Annotated[
        int,
        typer.Option(
            min=1, help="Other requests (searches by face id, lists, deletes) run at once, on workers of their own."
        ),
    ] = 8,
    insecure_no_auth: Annotated[
        bool, typer.Option("--insecure-no-auth", help="Accept unsigned requests (tests only; logs a warning).")
    ] = False,
    console: Annotated[
        bool, typer.Option("--console/--no-console", help="Serve the web console on /console/ (docs/console.md).")
    ] = True,
) -> None:
    """Serve the Rekognition face API (AWS JSON 1.1, SigV4) on http://HOST:PORT/ and the web
    console on http://HOST:PORT/console/."""
    # imported here so that the other commands start without the web stack
    from faceledger.api.app import ApiSettings
    from faceledger.api.server import background_duties, build_server, configure_logging

    configure_logging()
    with open_service() as service, background_duties(service):
        settings = ApiSettings(auth=not insecure_no_auth, quick_threads=quick_threads, console=console)
        if worker_threads is not None:
            settings = dataclasses.replace(settings, worker_threads=worker_threads)
        server = build_server(service, host, port, settings)
        render.errors.print(f"faceledger serving the Rekognition face API on http://{host}:{port}/")
        if settings.console and settings.auth:
            render.errors.print(f"and the web console on http://{host}:{port}/console/")
        server.run()


@reports_errors
def migrate(
    to: Annotated[str, typer.Option("--to", help="The PostgreSQL database to move the store into (postgresql://...).")],
    keep_sqlite: Annotated[
        bool,
        typer.Option(
            "--keep-sqlite",
            help="Keep the SQLite database aside (renamed *.before-migration) instead of removing it; "
            "erasures made from then on do not reach it.",
        ),
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Move this data directory's store into PostgreSQL: copy every row (templates stay sealed,
    the ledger keeps its chain), verify the copy, then switch the directory to it. Resumable: run
    it again after an interruption. Stop the server first."""

    def progress(table: str, rows: int) -> None:
        if rows % 10_000 == 0:
            render.errors.print(f"  {table}: {rows:,} rows copied", markup=False)

    with open_service() as service:
        response = service.migrate_store(to=to, keep_sqlite=keep_sqlite, progress=progress)

    def human(r: dict[str, Any]) -> None:
        render.table(None, ("Table", "Rows"), [[t["Table"], t["Rows"]] for t in r["Tables"]])
        render.console.print(
            f"Copied and verified (row counts, ledger chain and head); this data directory now uses {r['To']}.",
            markup=False,
        )
        if r["KeptSQLite"]:
            render.console.print(
                f"The SQLite database is kept at {r['KeptSQLite']}: erasures made from now on do not reach it; "
                "delete it once you no longer need it.",
                markup=False,
            )

    render.emit(response, as_json, human)


@keys_app.command("create")
@reports_errors
def keys_create(
    role: Annotated[str, typer.Option(help=f"One of {', '.join(role.value for role in Role)}.")],
    collections: Annotated[
        str | None, typer.Option(help="Comma-separated collection ids the key may use (default: all).")
    ] = None,
    description: Annotated[str | None, typer.Option(help="What the key is for.")] = None,
    as_json: JsonOption = False,
) -> None:
    """Create an access key. Its secret is printed once, now, and never again."""
    scope = [c.strip() for c in collections.split(",") if c.strip()] if collections else None
    with open_service() as service:
        response = service.create_access_key(role=role, collections=scope, description=description)

    def human(r: dict[str, Any]) -> None:
        render.console.print(f"AccessKeyId:     {r['AccessKeyId']}")
        render.console.print(f"SecretAccessKey: {r['SecretAccessKey']}")
        render.console.print("[bold]Store the secret now: it is shown only once.[/bold]")

    render.emit(response, as_json, human)


@keys_app.command("list")
@reports_errors
def keys_list(as_json: JsonOption = False) -> None:
    """Every access key (never the secrets)."""
    with open_service() as service:
        keys = [_key_dict(key) for key in service.access.keys.list()]
    render.emit(
        {"AccessKeys": keys},
        as_json,
        lambda r: render.table(
            None,
            ("AccessKeyId", "Role", "Collections", "Enabled", "Created", "Description"),
            [
                [
                    k["AccessKeyId"],
                    k["Role"],
                    ",".join(k["Collections"]) if k["Collections"] else "all",
                    k["Enabled"],
                    k["CreatedAt"],
                    k["Description"],
                ]
                for k in keys
            ],
        ),
    )


@keys_app.command("disable")
@reports_errors
def keys_disable(access_key_id: str) -> None:
    """Refuse every request signed with this key from now on (reversible)."""
    _set_enabled(access_key_id, False)


@keys_app.command("enable")
@reports_errors
def keys_enable(access_key_id: str) -> None:
    """Accept a disabled key again."""
    _set_enabled(access_key_id, True)


def _set_enabled(access_key_id: str, enabled: bool) -> None:
    with open_service() as service:
        service.set_access_key_enabled(access_key_id=access_key_id, enabled=enabled)
    render.console.print(f"{'Enabled' if enabled else 'Disabled'} {access_key_id}")


@keys_app.command("delete")
@reports_errors
def keys_delete(access_key_id: str) -> None:
    """Delete a key and its secret for good."""
    with open_service() as service:
        service.delete_access_key(access_key_id=access_key_id)
    render.console.print(f"Deleted {access_key_id}")


def _key_dict(key: Any) -> dict[str, Any]:
    return {
        "AccessKeyId": key.access_key_id,
        "Role": key.role,
        "Collections": list(key.collections) if key.collections is not None else None,
        "Enabled": key.enabled,
        "CreatedAt": datetime.fromtimestamp(key.created_at, tz=UTC).isoformat(timespec="seconds"),
        "Description": key.description,
    }


@keys_app.command("rotate-template-key")
@reports_errors
def keys_rotate_template_key() -> None:
    """Re-encrypt every stored face template under a new template key (template.key)."""
    with open_service() as service:
        count = service.rotate_template_key()["Reencrypted"]
    render.console.print(f"Re-encrypted {count} face template(s) under a new template key.")
