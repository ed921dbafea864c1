"""The playground page: upload one image (analysis) or two (analysis and the compare verdict);
the answer carries the boxes the page's script draws over its local previews, and the same
request as a curl command."""

from __future__ import annotations

from fastapi import APIRouter, Depends
from fastapi.responses import Response

from dupify.api.deps import get_context
from dupify.errors import ApiError
from dupify.portal.context import Visitor, member
from dupify.portal.playground import PLAYGROUND_FEATURES, analyse_uploads
from dupify.portal.snippets import ENV_KEY

router = APIRouter(include_in_schema=False)
FIELDS = {"image_a": "First image", "image_b": "Second image"}
# Stand-ins for the chosen files' names; the page's script puts the real names in.
FILE_NAMES = ("first.jpg", "second.jpg")


def as_curl(base_url: str, images: int) -> str:
    """The API calls the playground made, as curl commands (the key from the environment)."""
    base = base_url.rstrip("/")
    auth = f'  -H "Authorization: Bearer ${ENV_KEY}" \\\n'
    files = "".join(f"  -F file=@{name} \\\n" for name in FILE_NAMES[:images])
    features = ",".join(sorted(PLAYGROUND_FEATURES))
    commands = [f"curl {base}/v1/analyze \\\n{auth}{files}  -F features={features}"]
    if images == 2:
        a, b = FILE_NAMES
        commands.append(f"curl {base}/v1/compare \\\n{auth}  -F a=@{a} \\\n  -F b=@{b}")
    return "\n\n".join(commands)


def _page(v: Visitor, *, status: int = 200, **values: object) -> Response:
    return v.render("playground.html", status=status, limits=v.runtime.settings.limits, **values)


@router.get("/playground")
def playground_form(v: Visitor = Depends(member)) -> Response:
    return _page(v, errors={}, outcome=None)


@router.post("/playground")
async def playground(v: Visitor = Depends(member)) -> Response:
    assert v.account is not None
    # An empty file input still sends an (empty) part: only parts with bytes are images.
    uploads = [(FIELDS[name], data) for name, data in v.files if name in FIELDS and data]
    if not uploads:
        errors = {"image_a": "Choose an image to analyse (JPEG, PNG, WebP, GIF or BMP)."}
        return _page(v, status=400, errors=errors, outcome=None)
    try:
        outcome = await analyse_uploads(get_context(v.request), v.runtime, v.account, uploads[:2])
    except ApiError as exc:
        return _page(v, status=exc.status, errors={"image_a": exc.message}, outcome=None)
    return _page(v, errors={}, outcome=outcome, curl=as_curl(v.link(""), len(uploads[:2])))
