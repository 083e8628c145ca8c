#!/usr/bin/env python3
"""Train the rally Pong policy by imitation and export it as ONNX.

The data comes from the real simulation: `cargo run --release -p rally-bot --example
dataset` plays many matches in one PongWorld and records, for every view a seat gets,
the observation (spec v1, see bot/src/obs.rs) and the action of the expert policy
(bot/src/policy.rs, ExpertPolicy) for it. The model is a small MLP trained with
softmax cross-entropy and Adam, in numpy only, from a fixed seed: the same data and
seed give the same weights.

Usage (from the repository root, after `make .venv`):

    cargo run --release -p rally-bot --example dataset -- --out target/bot-data/round0.bin --seed 1
    .venv/bin/python bot/train/train.py --data target/bot-data/round0.bin --out bot/models/pong-v1.onnx --seed 1

See bot/README.md for the whole loop (including the self-play round).
"""

import argparse
import sys

import numpy as np

OBS_DIM = 6
N_ACTIONS = 3
OBS_SPEC_VERSION = "1"


def load(paths):
    parts = []
    for path in paths:
        raw = np.fromfile(path, dtype="<f4")
        if raw.size % (OBS_DIM + 1) != 0:
            sys.exit(f"{path}: {raw.size} floats is not a whole number of {OBS_DIM + 1}-float records")
        parts.append(raw.reshape(-1, OBS_DIM + 1))
    data = np.concatenate(parts)
    return data[:, :OBS_DIM].astype(np.float32), data[:, OBS_DIM].astype(np.int64)


def init(rng, sizes):
    params = []
    for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
        w = rng.normal(0.0, np.sqrt(2.0 / fan_in), size=(fan_in, fan_out)).astype(np.float32)
        b = np.zeros(fan_out, dtype=np.float32)
        params += [w, b]
    return params


def forward(params, x):
    acts = [x]
    h = x
    n_layers = len(params) // 2
    for i in range(n_layers):
        h = h @ params[2 * i] + params[2 * i + 1]
        if i < n_layers - 1:
            h = np.maximum(h, 0.0)
        acts.append(h)
    return acts


def loss_and_grads(params, x, y):
    acts = forward(params, x)
    logits = acts[-1]
    z = logits - logits.max(axis=1, keepdims=True)
    p = np.exp(z)
    p /= p.sum(axis=1, keepdims=True)
    n = x.shape[0]
    loss = -np.log(p[np.arange(n), y] + 1e-12).mean()
    d = p
    d[np.arange(n), y] -= 1.0
    d /= n
    grads = [None] * len(params)
    n_layers = len(params) // 2
    for i in reversed(range(n_layers)):
        grads[2 * i] = acts[i].T @ d
        grads[2 * i + 1] = d.sum(axis=0)
        if i > 0:
            d = (d @ params[2 * i].T) * (acts[i] > 0)
    return loss, grads


def accuracy(params, x, y):
    return float((forward(params, x)[-1].argmax(axis=1) == y).mean())


def train(x, y, args):
    rng = np.random.default_rng(args.seed)
    sizes = [OBS_DIM] + [args.hidden] * args.layers + [N_ACTIONS]
    params = init(rng, sizes)
    m = [np.zeros_like(p) for p in params]
    v = [np.zeros_like(p) for p in params]
    order = rng.permutation(len(x))
    n_val = min(len(x) // 20, 50_000)
    val, tr = order[:n_val], order[n_val:]
    step = 0
    for epoch in range(args.epochs):
        lr = args.lr * (0.5 * (1 + np.cos(np.pi * epoch / args.epochs)))
        perm = rng.permutation(tr)
        total = 0.0
        for start in range(0, len(perm), args.batch):
            idx = perm[start:start + args.batch]
            loss, grads = loss_and_grads(params, x[idx], y[idx])
            total += loss * len(idx)
            step += 1
            for i, g in enumerate(grads):
                m[i] = 0.9 * m[i] + 0.1 * g
                v[i] = 0.999 * v[i] + 0.001 * g * g
                mh = m[i] / (1 - 0.9 ** step)
                vh = v[i] / (1 - 0.999 ** step)
                params[i] -= (lr * mh / (np.sqrt(vh) + 1e-8)).astype(np.float32)
        print(f"epoch {epoch + 1}/{args.epochs}: loss {total / len(perm):.4f}, "
              f"val accuracy {accuracy(params, x[val], y[val]):.4f}", flush=True)
    return params


def export(params, path, args, n_samples):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes, inits = [], []
    prev = "obs"
    n_layers = len(params) // 2
    for i in range(n_layers):
        w, b = f"w{i}", f"b{i}"
        inits += [numpy_helper.from_array(params[2 * i].astype(np.float32), w),
                  numpy_helper.from_array(params[2 * i + 1].astype(np.float32), b)]
        out = "scores" if i == n_layers - 1 else f"h{i}"
        pre = out if i == n_layers - 1 else f"z{i}"
        nodes.append(helper.make_node("Gemm", [prev, w, b], [pre], name=f"dense{i}"))
        if i < n_layers - 1:
            nodes.append(helper.make_node("Relu", [pre], [out], name=f"relu{i}"))
        prev = out
    graph = helper.make_graph(
        nodes, "rally_pong_policy",
        [helper.make_tensor_value_info("obs", TensorProto.FLOAT, ["batch", OBS_DIM])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["batch", N_ACTIONS])],
        inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)],
                              producer_name="rally bot/train/train.py")
    model.ir_version = 8
    meta = {
        "rally.obs_spec": OBS_SPEC_VERSION,
        "rally.model": args.name,
        "rally.train_seed": str(args.seed),
        "rally.train_samples": str(n_samples),
        "rally.architecture": "mlp " + "-".join(str(s) for s in [OBS_DIM] + [args.hidden] * args.layers + [N_ACTIONS]),
    }
    for key, value in meta.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(model)
    onnx.save(model, path)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", nargs="*", default=[], help="dataset files written by the dataset example")
    parser.add_argument("--out", required=True, help="where to write the .onnx model")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--name", default="pong-v1")
    parser.add_argument("--untrained", action="store_true", help="export freshly initialized weights (bootstrap)")
    args = parser.parse_args()
    np.random.seed(args.seed)
    if args.untrained:
        params = init(np.random.default_rng(args.seed), [OBS_DIM] + [args.hidden] * args.layers + [N_ACTIONS])
        export(params, args.out, args, 0)
        return
    if not args.data:
        sys.exit("--data is required (or --untrained)")
    x, y = load(args.data)
    counts = np.bincount(y, minlength=N_ACTIONS)
    print(f"{len(x)} samples; actions stop/up/down: {counts.tolist()}", flush=True)
    params = train(x, y, args)
    export(params, args.out, args, len(x))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
