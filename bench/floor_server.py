"""The framework floor for a cache hit: FastAPI that reads the body, hashes it and answers a
stored 1024-d vector as JSON floats. No auth, limits, cache lookup or log: the least any FastAPI
server answering a cached embedding can do, which Dupify's cache hit is measured against.

    .venv/bin/python -m uvicorn floor_server:app --app-dir bench --port 8002
"""

from __future__ import annotations

import hashlib

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

# A fixed unit vector: what a cache would hold for the image (float32, as models give it).
_rng = np.random.default_rng(16)
_stored = _rng.standard_normal(1024).astype(np.float32)
STORED: list[float] = (_stored / np.linalg.norm(_stored)).tolist()
app = FastAPI()


@app.get("/healthz")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@app.post("/embed")
async def embed(request: Request) -> JSONResponse:
    body = await request.body()
    digest = hashlib.sha256(body).hexdigest()  # what a cache would be keyed by
    return JSONResponse({"embedding": STORED, "dimensions": len(STORED), "sha256": digest})
