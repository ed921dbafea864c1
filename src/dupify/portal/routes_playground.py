"""The playground page: upload one image (analysis) or two (analysis and the compare verdict)."""

from __future__ import annotations

from fastapi import APIRouter, Depends
from fastapi.responses import Response

from dupify.api.deps import get_context
from dupify.errors import ApiError
from dupify.portal.context import Visitor, member
from dupify.portal.playground import analyse_uploads

router = APIRouter(include_in_schema=False)
FIELDS = {"image_a": "First image", "image_b": "Second image"}


@router.get("/playground")
def playground_form(v: Visitor = Depends(member)) -> Response:
    return v.render("playground.html", errors={}, outcome=None, limits=v.runtime.settings.limits)


@router.post("/playground")
async def playground(v: Visitor = Depends(member)) -> Response:
    assert v.account is not None
    # An empty file input still sends an (empty) part: only parts with bytes are images.
    uploads = [(FIELDS[name], data) for name, data in v.files if name in FIELDS and data]
    limits = v.runtime.settings.limits
    if not uploads:
        errors = {"image_a": "Choose an image to analyse (JPEG, PNG, WebP, GIF or BMP)."}
        return v.render("playground.html", status=400, errors=errors, outcome=None, limits=limits)
    try:
        outcome = await analyse_uploads(get_context(v.request), v.runtime, v.account, uploads[:2])
    except ApiError as exc:
        return v.render(
            "playground.html",
            status=exc.status,
            errors={"image_a": exc.message},
            outcome=None,
            limits=limits,
        )
    return v.render("playground.html", errors={}, outcome=outcome, limits=limits)
