"""`dupify models list|check|add|pull`: the bundled and the operator's models (DUPIFY_MODELS_FILE),
whether each loads and why not, a probe of one, adding a declaration, and a hub download."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import numpy as np
import typer

from dupify.cli.common import console, errors, load_settings, print_rows
from dupify.cli.pull import PullError, download_files, hub_url
from dupify.config import Settings
from dupify.inference.catalog import (
    ModelDeclaration,
    ModelsFile,
    ModelsFileError,
    parse_models_file,
    read_models_file,
    sha256_file,
)

if TYPE_CHECKING:
    from dupify.inference.models.base import ImageModel

# The model modules (ONNX Runtime among them) are imported by the commands that load models,
# not by every `dupify` command, which imports this module to list its commands.

models_app = typer.Typer(
    help="The bundled models and the operator's (DUPIFY_MODELS_FILE).", no_args_is_help=True
)
PROBE_CAPTION = "a photo of a red square on a white background"
OTHER_CAPTION = "a photo of a dog in the snow"


def _catalog(settings: Settings) -> ModelsFile:
    try:
        return read_models_file(settings.models_file)
    except ModelsFileError as exc:
        errors.print(f"[red]models file:[/red] {exc}", highlight=False)
        raise typer.Exit(1) from exc


def _row(model: ImageModel, source: str, status: str) -> dict[str, Any]:
    return {
        "id": model.id,
        "task": model.task,
        "dimensions": model.dimensions,
        "modalities": ",".join(model.modalities),
        "version": model.version,
        "source": source,
        "status": status,
    }


@models_app.command("list")
def models_list(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """List the bundled models and the declared ones: loaded, or failing and why."""
    from dupify.inference.models.onnx_export import load_declared
    from dupify.inference.registry import ModelRegistry
    from dupify.inference.session import SessionPolicy

    settings = load_settings()
    registry = ModelRegistry(settings.inference, models_file=None)
    rows = [_row(model, "bundled", "loaded") for model in registry.models]
    catalog = _catalog(settings)
    policy = SessionPolicy.from_settings(settings.inference)
    for index, declaration in enumerate(catalog.models):
        try:
            rows.append(_row(load_declared(index, declaration, policy), "models file", "loaded"))
        except ModelsFileError as exc:
            rows.append(
                {
                    "id": declaration.id,
                    "task": declaration.task,
                    "dimensions": declaration.dimensions,
                    "modalities": "image,text" if declaration.task == "clip" else "image",
                    "version": declaration.version,
                    "source": "models file",
                    "status": f"failing: {exc}",
                }
            )
    print_rows(rows, as_json)
    if any(row["status"] != "loaded" for row in rows):
        raise typer.Exit(1)


def _load_one(settings: Settings, model_id: str) -> ImageModel:
    from dupify.inference.models.onnx_export import load_declared
    from dupify.inference.registry import BUNDLED_MODELS, ModelRegistry
    from dupify.inference.session import SessionPolicy

    if model_id in BUNDLED_MODELS:
        return ModelRegistry(settings.inference, only=[model_id]).get(model_id)
    catalog = _catalog(settings)
    policy = SessionPolicy.from_settings(settings.inference)
    for index, declaration in enumerate(catalog.models):
        if declaration.id == model_id:
            try:
                return load_declared(index, declaration, policy)
            except ModelsFileError as exc:
                errors.print(f"[red]failing:[/red] {exc}", highlight=False)
                raise typer.Exit(1) from exc
    known = [*BUNDLED_MODELS, *(declaration.id for declaration in catalog.models)]
    errors.print(f"[red]error:[/red] no model {model_id!r}; known: {', '.join(known)}")
    raise typer.Exit(1)


def _probe_pixels(side: int) -> np.ndarray:
    """A red square on white: what the probe caption says."""
    pixels = np.full((side, side, 3), 255, dtype=np.uint8)
    pixels[side // 4 : 3 * side // 4, side // 4 : 3 * side // 4] = (220, 20, 20)
    return pixels


def _rate(run: Any, batch: Any, count: int, seconds: float) -> float:
    done, start = 0, time.perf_counter()
    while done == 0 or time.perf_counter() - start < seconds:
        run(batch)
        done += count
    return done / (time.perf_counter() - start)


@models_app.command("check")
def models_check(
    model_id: Annotated[str, typer.Argument(help="The model id.")],
    seconds: Annotated[float, typer.Option(help="How long to measure each throughput.")] = 2.0,
    batch: Annotated[int, typer.Option(min=1, help="Images (or texts) per run.")] = 8,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Load one model, run a probe image (and caption), print its dimensions, its throughput on
    this machine and the cosine between the probe image and its caption."""
    from dupify.inference.models.base import EMBEDDING

    settings = load_settings()
    model = _load_one(settings, model_id)
    tensor = model.preprocess(_probe_pixels(max(model.working_side, 64)))
    images = np.stack([tensor] * batch)
    [vector] = model.predict(tensor[None])[EMBEDDING]
    report: dict[str, Any] = {
        "id": model.id,
        "version": model.version,
        "dimensions": int(vector.shape[0]),
        "modalities": list(model.modalities),
        "providers": model.providers,
        "unit_norm": round(float(np.linalg.norm(vector)), 6),
        "images_per_second": round(_rate(model.predict, images, batch, seconds), 1),
    }
    encoder = model.text_encoder
    if encoder is not None:
        rows = np.stack(encoder.tokenize([PROBE_CAPTION, OTHER_CAPTION]))
        caption, other = encoder.predict(rows)[EMBEDDING]
        texts = np.stack(encoder.tokenize([PROBE_CAPTION] * batch))
        report["texts_per_second"] = round(_rate(encoder.predict, texts, batch, seconds), 1)
        report["cosine_image_caption"] = round(float(vector @ caption), 4)
        report["cosine_image_other_caption"] = round(float(vector @ other), 4)
    if as_json:
        typer.echo(json.dumps(report, indent=2))
        return
    for key, value in report.items():
        console.print(f"{key}: {value}", highlight=False)


def declaration_toml(declaration: ModelDeclaration) -> str:
    """A `[[models]]` entry in TOML: the fields that differ from the defaults, tables last."""
    data = declaration.model_dump(mode="json", exclude_defaults=True)
    data.setdefault("task", declaration.task)
    lines = ["[[models]]"]
    tables: list[str] = []
    for key, value in data.items():
        if isinstance(value, dict):
            tables += [f"[models.{key}]", *(f"{k} = {json.dumps(v)}" for k, v in value.items())]
        elif value is not None:
            lines.append(f"{key} = {json.dumps(value)}")
    return "\n".join([*lines, *tables]) + "\n"


def add_declaration(models_file: Path, declaration: ModelDeclaration, check: bool) -> None:
    """Append `declaration` to the models file after checking that the result parses (and,
    with `check`, that the model loads); the file is left as it was on any error."""
    from dupify.inference.models.onnx_export import load_declared
    from dupify.inference.session import SessionPolicy

    existing = models_file.read_text(encoding="utf-8") if models_file.exists() else ""
    entry = declaration_toml(declaration)
    combined = existing + ("\n" if existing and not existing.endswith("\n\n") else "") + entry
    parsed = parse_models_file(combined, models_file)
    if check:
        index = len(parsed.models) - 1
        load_declared(index, parsed.models[index], SessionPolicy())
    models_file.parent.mkdir(parents=True, exist_ok=True)
    temporary = models_file.with_name(models_file.name + ".tmp")
    temporary.write_text(combined, encoding="utf-8")
    temporary.replace(models_file)


def _models_file(settings: Settings, given: Path | None) -> Path:
    path = given or settings.models_file
    if path is None:
        errors.print("[red]error:[/red] set DUPIFY_MODELS_FILE or pass --models-file")
        raise typer.Exit(2)
    return path


def _pinned(fields: dict[str, Path | None]) -> dict[str, str]:
    return {name: sha256_file(path) for name, path in fields.items() if path is not None}


@models_app.command("add")
def models_add(
    model_id: Annotated[str, typer.Argument(help="The public model id.")],
    task: Annotated[str, typer.Option(help="image or clip")],
    dimensions: Annotated[int, typer.Option(help="Length of one embedding.")],
    image_model: Annotated[Path | None, typer.Option(help="The image encoder's .onnx")] = None,
    text_model: Annotated[Path | None, typer.Option(help="The text encoder's .onnx")] = None,
    model: Annotated[Path | None, typer.Option(help="One .onnx with both towers")] = None,
    tokenizer: Annotated[Path | None, typer.Option(help="tokenizer.json (clip)")] = None,
    version: Annotated[str, typer.Option(help="The model version.")] = "1",
    output: Annotated[str | None, typer.Option(help="Image output tensor")] = None,
    size: Annotated[int, typer.Option(help="Model input side")] = 224,
    resize: Annotated[str, typer.Option(help="shortest or squash")] = "shortest",
    mean: Annotated[str | None, typer.Option(help="e.g. 0.5,0.5,0.5")] = None,
    std: Annotated[str | None, typer.Option(help="e.g. 0.5,0.5,0.5")] = None,
    models_file: Annotated[Path | None, typer.Option(help="Default: DUPIFY_MODELS_FILE")] = None,
    check: Annotated[bool, typer.Option(help="Load it before writing it")] = True,
) -> None:
    """Declare a model in the models file, its files pinned by sha256 (checked at load)."""
    target = _models_file(load_settings(), models_file)
    files = {"image_model": image_model, "text_model": text_model, "model": model}
    files["tokenizer"] = tokenizer
    preprocess: dict[str, Any] = {"size": size, "resize": resize}
    for name, value in (("mean", mean), ("std", std)):
        if value is not None:
            preprocess[name] = [float(part) for part in value.split(",")]
    try:
        absolute = {k: v.resolve() if v else None for k, v in files.items()}
        declaration = ModelDeclaration.model_validate(
            {
                "id": model_id,
                "version": version,
                "task": task,
                "dimensions": dimensions,
                "output": output,
                "preprocess": preprocess,
                "sha256": _pinned(absolute),
                **{k: v for k, v in absolute.items() if v is not None},
            }
        )
        add_declaration(target, declaration, check)
    except (ModelsFileError, ValueError, OSError) as exc:
        errors.print(f"[red]error:[/red] {exc}", highlight=False)
        raise typer.Exit(1) from exc
    console.print(f"added {model_id} to {target}", highlight=False)


@models_app.command("pull")
def models_pull(
    repo: Annotated[str, typer.Argument(help="The hub repository, e.g. owner/name.")],
    files: Annotated[list[str], typer.Option("--file", help="A file in the repository.")],
    hub: Annotated[
        str | None, typer.Option(help="The hub's base URL (default: $HF_ENDPOINT).")
    ] = None,
    revision: Annotated[str, typer.Option(help="Branch, tag or commit.")] = "main",
    dest: Annotated[Path | None, typer.Option(help="Default: the models file's folder.")] = None,
    sha256: Annotated[list[str] | None, typer.Option(help="FILE=HEX to insist on.")] = None,
) -> None:
    """Download a named export from a model hub, each file checked against its checksum (the
    hub's, and any given with --sha256). Runs only when asked; nothing else downloads."""
    settings = load_settings()
    folder = dest or (settings.models_file.parent if settings.models_file else Path("models"))
    target = folder / repo.replace("/", "__")
    expected = dict(item.split("=", 1) for item in sha256 or [])
    try:
        base = hub_url(hub)
        pulled = download_files(base, repo, revision, files, target, expected)
    except PullError as exc:
        errors.print(f"[red]pull failed:[/red] {exc}", highlight=False)
        raise typer.Exit(1) from exc
    for path, digest in pulled.items():
        console.print(f"{digest}  {path}", highlight=False)
    console.print(
        f"pulled {len(pulled)} file(s) into {target}; declare them with `dupify models add`",
        highlight=False,
    )
