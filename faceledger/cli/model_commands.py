"""``faceledger models ...``: the face models collections can be made with."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from faceledger.cli import render
from faceledger.cli.common import JsonOption, open_service, reports_errors
from faceledger.errors import InvalidParameterException

models_app = typer.Typer(help="Face models: the default, and ONNX networks you register.", no_args_is_help=True)


@models_app.command("list")
@reports_errors
def models_list(as_json: JsonOption = False) -> None:
    """Every face model this data directory can make collections with."""
    with open_service() as service:
        models = service.models.listing()
    render.emit(
        {"FaceModels": models},
        as_json,
        lambda r: render.table(
            None,
            ("Name", "FaceModelVersion", "Dimension", "Chip", "Default"),
            [
                [m["Name"], m["FaceModelVersion"], m["Dimension"], m["ChipSize"], "yes" if m["Default"] else ""]
                for m in models
            ],
        ),
    )


@models_app.command("register")
@reports_errors
def models_register(
    name: str,
    onnx: Annotated[Path, typer.Option("--onnx", help="The network: an .onnx file (kept where it is).")],
    spec: Annotated[
        Path, typer.Option("--spec", help="JSON: input_size, dimension, colour, mean, std, layout, alignment...")
    ],
    as_json: JsonOption = False,
) -> None:
    """Register your own embedding network as face model NAME, for 'collection create --model NAME'.
    It ships no threshold table: calibrate each collection made with it ('faceledger calibrate')
    before searching it."""
    try:
        description = json.loads(spec.read_text())
    except (OSError, ValueError) as exc:
        raise InvalidParameterException(f"{spec} is not a JSON model spec: {exc}") from None
    with open_service() as service:
        response = service.register_face_model(name=name, onnx_file=str(onnx), spec=description)
    render.emit(
        response, as_json, lambda r: render.console.print(f"Registered face model {name}: {r['FaceModelVersion']}")
    )
