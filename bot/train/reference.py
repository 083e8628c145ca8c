#!/usr/bin/env python3
"""Reference inference for the Rust tests: reads {"model": path, "inputs": [[6 floats], ...]}
as JSON on stdin, runs Python's onnxruntime, and prints the scores as a JSON list of rows."""

import json
import sys

import numpy as np
import onnxruntime as ort

request = json.load(sys.stdin)
session = ort.InferenceSession(request["model"], providers=["CPUExecutionProvider"])
inputs = np.asarray(request["inputs"], dtype=np.float32)
(scores,) = session.run(None, {session.get_inputs()[0].name: inputs})
json.dump(scores.astype(float).tolist(), sys.stdout)
