"""The hand-written peer `make bench` measures Dupify against: the server a user would write in
an afternoon with FastAPI, Pillow and ONNX Runtime (full decode, batch 1, JSON floats).

It runs the same graph and the same preprocessing as Dupify's default model: both come from
`dupify.inference.models.visual.VisualModel` (its `load` and `preprocess`), so the two servers
differ in how they serve the model, not in the model. No auth, limits, cache or log.

    .venv/bin/python -m uvicorn peer_server:app --app-dir bench --port 8001
"""

from __future__ import annotations

import io

import numpy as np
import onnxruntime as ort
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from PIL import Image
from starlette.concurrency import run_in_threadpool

from dupify.inference.models.visual import VisualModel

# VisualModel's own graph (open-nsfw with its 1024-d pool exposed) and preprocessing, without
# Dupify's session policy: a hand-written server opens the graph with ONNX Runtime's defaults.
MODEL = object.__new__(VisualModel)  # only `load` and `preprocess` are wanted, no Dupify session
MODEL._model_path = None
GRAPH = MODEL.load()
session = ort.InferenceSession(GRAPH, providers=["CPUExecutionProvider"])
app = FastAPI()


def embedding_of(body: bytes) -> list[float]:
    image = Image.open(io.BytesIO(body)).convert("RGB")  # full decode, no draft mode
    tensor = MODEL.preprocess(np.asarray(image))[np.newaxis]  # batch 1
    (pooled,) = session.run([MODEL._embedding], {MODEL._input: tensor})
    vector = pooled.reshape(-1)
    vector = vector / max(float(np.linalg.norm(vector)), 1e-12)
    result: list[float] = vector.tolist()
    return result


@app.get("/healthz")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@app.post("/embed")
async def embed(request: Request) -> JSONResponse:
    body = await request.body()
    # Off the event loop, in Starlette's thread pool, as a careful hand-written server does.
    vector = await run_in_threadpool(embedding_of, body)
    return JSONResponse({"embedding": vector, "dimensions": len(vector)})
