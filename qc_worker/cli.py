"""The ``qc`` command line.

For now it has one command, ``qc config``, which prints the effective settings with secrets
masked. Screening, enqueueing, rescans, workers and database commands arrive with their
issues.
"""

from __future__ import annotations

import json

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from qc_worker import __version__
from qc_worker.config import Settings, format_validation_error, get_settings

app = typer.Typer(
    name="qc",
    help="Artwork QC: find subtle motion blur in streaming artwork.",
    no_args_is_help=True,
    add_completion=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"qc {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: bool = typer.Option(
        False, "--version", help="Print the version and exit.", callback=_version, is_eager=True
    ),
) -> None:
    """Artwork QC: find subtle motion blur in streaming artwork."""


def _load_settings() -> Settings:
    try:
        return get_settings()
    except ValidationError as err:
        typer.echo(format_validation_error(err), err=True)
        raise typer.Exit(code=2) from None


@app.command("config")
def config_command(
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """Print the effective settings (environment QC_*, then .env, then defaults); secrets masked."""
    settings = _load_settings()
    values = settings.redacted()
    if as_json:
        typer.echo(json.dumps(values, indent=2, sort_keys=True))
        return
    table = Table(title="Effective settings (secrets masked)")
    table.add_column("setting", style="bold", no_wrap=True)
    table.add_column("value", overflow="fold")
    table.add_column("environment variable", style="dim", no_wrap=True)
    for name in Settings.model_fields:
        value = values[name]
        # Nested sections (faces, regions, roi) get one row per field: QC_REGIONS__FIELD.
        rows = value.items() if isinstance(value, dict) else [(None, value)]
        for sub, v in rows:
            label = name if sub is None else f"{name}.{sub}"
            env = Settings.env_name(name) + ("" if sub is None else f"__{sub.upper()}")
            shown = "[dim](unset)[/dim]" if v is None else escape(str(v))
            table.add_row(label, shown, env)
    Console().print(table)


if __name__ == "__main__":  # pragma: no cover
    app()
