"""The plain baseline for `benchmarks/serving.py`: FastAPI + pydantic around one onnxruntime session.

This is what a V2 infer endpoint usually looks like: a pydantic request model with `data` as
`list[list[float]]`, `np.asarray`, `session.run`, a pydantic response model. It uses the same session
options as the service (one intra-op thread, one inter-op thread). Run it as

    python benchmarks/baseline_app.py --model-dir DIR --port PORT

which serves it under uvicorn with one worker and no access log on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import uvicorn
from fastapi import FastAPI, HTTPException
from pydantic import BaseModel


class InferInput(BaseModel):
    name: str
    shape: list[int]
    datatype: str
    data: list[list[float]]


class InferRequest(BaseModel):
    id: str | None = None
    inputs: list[InferInput]


class InferOutput(BaseModel):
    name: str
    shape: list[int]
    datatype: str
    data: list[float]


class InferResponse(BaseModel):
    model_name: str
    id: str | None = None
    outputs: list[InferOutput]


def create_app(model_dir: Path) -> FastAPI:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(model_dir / "model.onnx"), options, providers=["CPUExecutionProvider"])
    input_name: str = session.get_inputs()[0].name
    output_name: str = session.get_outputs()[0].name
    app = FastAPI(title="plain baseline")

    @app.get("/ready")
    async def ready() -> dict[str, bool]:
        return {"ready": True}

    @app.post("/v2/models/{name}/infer", response_model=InferResponse)
    async def infer(name: str, request: InferRequest) -> InferResponse:
        tensor = request.inputs[0]
        if tensor.name != input_name:
            raise HTTPException(400, f"unknown input {tensor.name!r}")
        features = np.asarray(tensor.data, dtype=np.float32)
        outputs: list[Any] = session.run([output_name], {input_name: features})
        predictions = np.asarray(outputs[0], dtype=np.float32).reshape(-1)
        return InferResponse(
            model_name=name,
            id=request.id,
            outputs=[
                InferOutput(
                    name=output_name, shape=[len(predictions)], datatype="FP32", data=predictions.tolist()
                )
            ],
        )

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--model-dir", type=Path, default=os.environ.get("BASELINE_MODEL_DIR"))
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    if args.model_dir is None:
        parser.error("--model-dir is required")
    app = create_app(args.model_dir)
    uvicorn.run(app, host="127.0.0.1", port=args.port, workers=1, access_log=False, log_level="warning")


if __name__ == "__main__":
    main()
