"""`dupify worker` (the RunPod Serverless handler) and `dupify worker serve` (the same jobs over
plain HTTP for self-hosted GPU boxes)."""

from __future__ import annotations

import importlib.util
import sys
from typing import Annotated

import typer
from typer.core import TyperGroup

from dupify.cli.common import errors, load_settings

SDK_ARGS = "runpod_sdk_args"


class _SdkFlagsPassThrough(TyperGroup):
    """`dupify worker --rp_serve_api ...`: arguments that do not start with a subcommand are
    the RunPod SDK's own flags, kept for it instead of being read as a command name."""

    def parse_args(self, ctx: typer.Context, args: list[str]) -> list[str]:  # type: ignore[override]
        if args and args[0] not in self.commands and args[0] not in ("--help", "-h"):
            ctx.meta[SDK_ARGS] = list(args)
            return super().parse_args(ctx, [])
        return super().parse_args(ctx, args)


worker_app = typer.Typer(
    cls=_SdkFlagsPassThrough,
    help="The GPU inference worker (docs/deployment.md).",
    invoke_without_command=True,
)


@worker_app.callback()
def worker(ctx: typer.Context) -> None:
    """Run the RunPod Serverless worker: load the models, then take jobs from the endpoint's
    queue. The SDK's own flags pass through, e.g. `--rp_serve_api --rp_api_host 127.0.0.1
    --rp_api_port 8010` for its local test API."""
    if ctx.invoked_subcommand is not None:
        return
    # Looked up, not imported: the SDK fixes its log level when first imported (handler.main).
    if importlib.util.find_spec("runpod") is None:
        errors.print("[red]the RunPod SDK is not installed:[/red] pip install 'dupify[worker]'")
        raise typer.Exit(2)
    from dupify.worker import handler

    load_settings()  # a configuration error is reported here, cleanly
    sys.argv = [sys.argv[0], *ctx.meta.get(SDK_ARGS, [])]  # the SDK reads its flags there
    handler.main()


@worker_app.command()
def serve(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8010,
) -> None:
    """Serve the worker's job protocol over plain HTTP (POST /runsync, /run, GET /status/{id},
    POST /cancel/{id}); point DUPIFY_RUNPOD__ENDPOINT_URL of the API processes at it."""
    import logging

    from dupify.worker.http import serve as serve_jobs

    settings = load_settings()
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    serve_jobs(settings, host, port)
