"""``qc config``: the effective settings, secrets masked."""

from __future__ import annotations

import json

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from qc_worker.cli.common import load_settings
from qc_worker.config import Settings


def config_command(
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """Print the effective settings (environment QC_*, then .env, then defaults); secrets masked."""
    settings = load_settings()
    values = settings.redacted()
    if as_json:
        typer.echo(json.dumps(values, indent=2, sort_keys=True))
        return
    table = Table(title="Effective settings (secrets masked)")
    # At 80 columns the two name columns alone fill the line; the value is what the command
    # is for, so it keeps a third of the width and the names fold instead.
    table.add_column("setting", style="bold", overflow="fold")
    table.add_column("value", overflow="fold", min_width=20)
    table.add_column("environment variable", style="dim", overflow="fold")
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
