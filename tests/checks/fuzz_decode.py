"""Coverage-guided fuzzing (atheris over libFuzzer) of the decode path under the default limits:
`decode_image` on raw bytes, and the body reader on multipart and JSON bodies with every image
it finds decoded. `ApiError` is the expected refusal; any other exception (or a crash of the
process) is a finding: libFuzzer stops, prints the input and saves it as `crash-<sha1>`.

    python tests/checks/fuzz_decode.py CORPUS_DIR [libFuzzer options, e.g. -max_total_time=300]
    python tests/checks/fuzz_decode.py crash-<sha1>      # run one saved input again

An empty CORPUS_DIR is seeded with small real images in every format (tests/support/seeds.py).
The first input byte picks the target; the rest is its data.
"""

from __future__ import annotations

import base64
import logging
import sys
from collections.abc import AsyncIterator, Coroutine, Mapping
from pathlib import Path
from typing import Any

import atheris

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/, for support.seeds

# Instrumented for coverage feedback: our code, Pillow's Python parsers, the multipart parser.
with atheris.instrument_imports(include=["dupify", "PIL", "python_multipart"]):
    from dupify.config import ImageLimits
    from dupify.errors import ApiError
    from dupify.images.decoding import decode_image
    from dupify.images.inputs import decode_base64_image, read_request_body

from support.seeds import image_seeds  # after the instrumented imports: it imports Pillow

LIMITS = ImageLimits()
# The multipart parser logs a warning for each malformed byte; findings are exceptions, not logs.
logging.disable(logging.CRITICAL)
BOUNDARY = b"fuzzboundary"
DECODE, MULTIPART, JSON_BODY = 0, 1, 2


class FuzzedRequest:
    """A request whose body arrives in the given chunks (what the readers take)."""

    def __init__(self, content_type: str, chunks: list[bytes]) -> None:
        self._headers = {"content-type": content_type}
        self._chunks = chunks

    @property
    def headers(self) -> Mapping[str, str]:
        return self._headers

    async def stream(self) -> AsyncIterator[bytes]:
        for chunk in self._chunks:
            yield chunk


def finish(coroutine: Coroutine[Any, Any, Any]) -> Any:
    """Run a coroutine that awaits nothing but its in-memory body, without an event loop."""
    try:
        coroutine.send(None)
    except StopIteration as done:
        return done.value
    coroutine.close()
    raise AssertionError("the body reader waited on something other than its body")


def chunked(data: bytes, size: int) -> list[bytes]:
    return [data[start : start + size] for start in range(0, len(data), size)] or [b""]


def read_and_decode(content_type: str, data: bytes, chunk_size: int) -> None:
    body = finish(read_request_body(FuzzedRequest(content_type, chunked(data, chunk_size)), LIMITS))
    images = [content for _, content in body.files]
    for name, value in body.json.items():
        if isinstance(value, str):
            images.append(decode_base64_image(value, name, LIMITS))
    for image in images:
        try:
            decode_image(image, LIMITS)
        except ApiError:
            continue


def test_one_input(data: bytes) -> None:
    if len(data) < 2:
        return
    target, chunk_size, payload = data[0] % 3, data[1] + 1, data[2:]
    try:
        if target == DECODE:
            decode_image(payload, LIMITS)
        elif target == MULTIPART:
            read_and_decode(
                f"multipart/form-data; boundary={BOUNDARY.decode()}", payload, chunk_size
            )
        else:
            read_and_decode("application/json", payload, chunk_size)
    except ApiError:
        return


def multipart(parts: list[tuple[str, bytes]]) -> bytes:
    body = b""
    for name, content in parts:
        body += b"--" + BOUNDARY + b"\r\n"
        body += f'Content-Disposition: form-data; name="file"; filename="{name}"\r\n'.encode()
        body += b"Content-Type: application/octet-stream\r\n\r\n" + content + b"\r\n"
    return body + b"--" + BOUNDARY + b"--\r\n"


def seed(corpus: Path) -> None:
    """Write the starting inputs into an empty corpus: each seed image for every target."""
    if any(corpus.iterdir()):
        return
    for name, image in image_seeds().items():
        (corpus / f"decode-{name}").write_bytes(bytes([DECODE, 255]) + image)
        (corpus / f"multipart-{name}").write_bytes(
            bytes([MULTIPART, 63]) + multipart([(name, image)])
        )
        document = b'{"input": "' + base64.b64encode(image) + b'"}'
        (corpus / f"json-{name}").write_bytes(bytes([JSON_BODY, 127]) + document)


def main() -> None:
    # libFuzzer takes directories (corpora) and files (inputs to run once, e.g. a crash-* file).
    corpora = [Path(arg) for arg in sys.argv[1:] if not arg.startswith("-")]
    for corpus in (path for path in corpora if not path.is_file()):
        corpus.mkdir(parents=True, exist_ok=True)
        seed(corpus)
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
