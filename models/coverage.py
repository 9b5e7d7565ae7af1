"""Which networks tfcompress handles: every technique on networks nobody here wrote.

    python models/coverage.py                      # every network, ~40 minutes on 2 cores
    python models/coverage.py --only resnet8,unet  # a subset
    python models/coverage.py --out DIR            # write coverage.json/.md elsewhere
    python models/coverage.py --keras2 vww_96.h5 kws_ref_model   # Keras 2 files too
    python models/coverage.py --only ConvNeXtTiny --update       # rerun some rows
    python models/coverage.py --npu-only           # only the NPU column (needs the npu extra)

For each network, at a small input size and on a synthetic task it can learn in a few steps
(one noisy template per class; for the U-Net, each pixel's brightest channel; class and box
targets per anchor for the detector), each column is the outcome of what a user would run:

- (a) **prune + QAT -> int8**: 3 float epochs (15 for the U-Net; BatchNormalization momentum
  0.9), 1 epoch of `Pruning` to 50 %, `quantize_aware`, 1 QAT epoch, `to_tflite(q, "int8")`.
  ✓ when the file is integer-only and the top-1 agreement between the QAT model and LiteRT on
  200 inputs is >= 99 % (per pixel for the U-Net, per anchor for the detector's classes).
- (b) **channels + shrink**: 1 epoch of `Pruning(granularity="channel")` to 30 %, `shrink`. ✓
  when the shrunk model's outputs equal the masked model's (<= 1e-4, relative to the outputs'
  scale); parameter and MAC ratios.
- (c) **factorize, full rank**: `factorize(ranks=...)` at every layer's full rank. ✓ when the
  outputs equal the original's (<= 1e-4 relative).
- (d) **make_student**: `make_student(model, 0.5)`; the student's parameter ratio.
- (e) **Arm Ethos-U NPU** (with the `npu` extra): post-training int8 of the network as built
  (where ops run depends on its structure, not its weights; calibrated on 64 synthetic
  inputs), `to_tflite(..., target=...)` for `ethos-u55-128` and `ethos-u85-256` with CPU ops
  allowed: the share of the file's ops on the NPU, Vela's estimated time per inference on
  each, and every op left to the CPU with its layer and Vela's reason. ✓ when every op runs
  on the NPU of both. `--npu-only` runs this column alone and keeps the others.

A cell that is not ✓ gives the first line of the error. Each network runs in its own process.
Writes `coverage.json` and `coverage.md` beside this script.
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).parent
AGREEMENT = 0.99
TOLERANCE = 1e-4

# name: (builder expression, input shape, inputs in 0-255 because the model rescales them)
APPS = {
    "MobileNet": ((32, 32, 3), False), "MobileNetV2": ((32, 32, 3), False),
    "MobileNetV3Small": ((32, 32, 3), True), "MobileNetV3Large": ((32, 32, 3), True),
    "EfficientNetB0": ((32, 32, 3), True), "EfficientNetV2B0": ((32, 32, 3), True),
    "ResNet50": ((32, 32, 3), False), "ResNet50V2": ((32, 32, 3), False),
    "DenseNet121": ((32, 32, 3), False), "NASNetMobile": ((32, 32, 3), False),
    "Xception": ((71, 71, 3), False), "ConvNeXtTiny": ((32, 32, 3), True),
}
EPOCHS = {"U-Net": 15}  # float epochs where 3 do not separate the classes
OWN = ["ResNet-8", "DS-CNN", "MobileNetV1-0.25", "U-Net", "Conv1D audio", "SSD detector"]
NETWORKS = list(APPS) + OWN


def build(name: str):
    """The network, uncompiled, with logits outputs, and whether its inputs are 0-255."""
    import keras

    import tfcompress.reference as ref

    if name in APPS:
        shape, wide = APPS[name]
        kwargs = {"input_shape": shape, "weights": None, "classes": 10,
                  "classifier_activation": None}
        if name.startswith("MobileNetV3"):
            kwargs["include_preprocessing"] = True
        if name == "NASNetMobile":
            kwargs.pop("classifier_activation")  # NASNet's softmax is replaced below
        model = getattr(keras.applications, name)(**kwargs)
        if name == "NASNetMobile":
            last = model.layers[-1]
            last.activation = keras.activations.linear
        return model, wide
    if name == "ResNet-8":
        return ref.reference_resnet8(), False
    if name == "DS-CNN":
        return ref.reference_ds_cnn(), False
    if name == "MobileNetV1-0.25":
        return keras.applications.MobileNet((96, 96, 3), alpha=0.25, weights=None, classes=2,
                                            classifier_activation=None), False
    if name == "U-Net":
        return ref.reference_unet(), False
    if name == "Conv1D audio":
        return ref.reference_audio_conv1d(), False
    if name == "SSD detector":
        return ssd_two_heads(), False
    raise ValueError(f"unknown network {name!r}; known: {', '.join(NETWORKS)}")


def ssd_two_heads(input_shape=(96, 96, 3), num_classes=4, anchors=3, alpha=0.25,
                  name="detector"):
    """An SSD-style detector with two outputs from a nested MobileNet backbone: `classes`
    `(batch, boxes, num_classes)` and `boxes` `(batch, boxes, 4)`, from 3x3 convolutions on
    the feature maps at strides 16 and 32 (the coverage row; `tfcompress.reference.
    reference_detector` is the trainable single-output detector)."""
    import keras

    layers = keras.layers
    base = keras.applications.MobileNet(input_shape=input_shape, alpha=alpha,
                                        include_top=False, weights=None)
    backbone = keras.Model(base.input, [base.get_layer("conv_pw_11_relu").output, base.output],
                           name="backbone")
    inputs = keras.Input(shape=input_shape, name="image")
    features = backbone(inputs)
    classes, boxes = [], []
    for i, f in enumerate(features):
        c = layers.Conv2D(anchors * num_classes, 3, padding="same", name=f"cls_head{i}")(f)
        classes.append(layers.Reshape((-1, num_classes), name=f"cls_flat{i}")(c))
        b = layers.Conv2D(anchors * 4, 3, padding="same", name=f"box_head{i}")(f)
        boxes.append(layers.Reshape((-1, 4), name=f"box_flat{i}")(b))
    out_c = layers.Concatenate(axis=1, name="classes")(classes)
    out_b = layers.Concatenate(axis=1, name="boxes")(boxes)
    return keras.Model(inputs, [out_c, out_b], name=name)


def synthetic(model, n: int, wide: bool, seed: int = 0):
    """Inputs (one noisy template per class) and a target per output."""
    import numpy as np

    rng = np.random.default_rng(seed)
    shape = tuple(model.inputs[0].shape[1:])
    classes = [int(o.shape[-1]) for o in model.outputs]
    regression = _regression_outputs(model)
    k = classes[0] if not regression[0] else 4
    templates = rng.uniform(0, 1, (k,) + shape).astype("float32")
    y = rng.integers(0, k, n)
    x = np.clip(templates[y] * 0.7 + rng.uniform(0, 0.3, (n,) + shape), 0, 1).astype("float32")
    if wide:
        x = x * 255.0
    targets = []
    box_of_class = rng.normal(0, 1, (k, 4)).astype("float32")
    for out, box in zip(model.outputs, regression, strict=True):
        o_shape = tuple(out.shape[1:])
        if box:
            targets.append(np.broadcast_to(box_of_class[y][:, None, :],
                                           (n,) + o_shape).copy())
        elif len(o_shape) == 3 and o_shape[:2] == shape[:2]:  # per pixel: brightest channel
            targets.append((x.reshape((n,) + shape).argmax(-1) % o_shape[-1]).astype("int32"))
        else:
            targets.append(np.broadcast_to(y.reshape((n,) + (1,) * (len(o_shape) - 1)),
                                           (n,) + o_shape[:-1]).copy().astype("int32"))
    return x, targets


def _regression_outputs(model) -> list[bool]:
    """Per output: is it box offsets (regression)? Read from the name of the layer that
    makes it ("boxes", or "boxes_quant" in the QAT model)."""
    from tfcompress import _graph

    return ["boxes" in name for name in _graph.output_names(model)]


def compile_model(model, lr: float = 1e-3):
    import keras

    losses = ["mse" if box else keras.losses.SparseCategoricalCrossentropy(from_logits=True)
              for box in _regression_outputs(model)]
    model.compile(optimizer=keras.optimizers.Adam(lr),
                  loss=losses if len(losses) > 1 else losses[0])
    return model


def fit(model, x, targets, epochs: int, callbacks=()):
    model.fit(x, targets if len(targets) > 1 else targets[0], epochs=epochs, batch_size=32,
              verbose=0, callbacks=list(callbacks))


def outputs_of(model, x):
    out = model.predict(x, batch_size=64, verbose=0)
    return out if isinstance(out, list) else [out]


def rel_diff(a_list, b_list) -> float:
    import numpy as np

    return max(float(np.max(np.abs(a - b)) / max(1e-6, float(np.max(np.abs(a)))))
               for a, b in zip(a_list, b_list, strict=True))


def tflite_outputs(path: str, model, x):
    """Every output of the file on `x`, in the Keras model's output order."""
    from tfcompress import _tflite

    return _tflite.run_all(_tflite.interpreter(path), x,
                           [tuple(o.shape[1:]) for o in model.outputs])


def first_line(e: BaseException) -> str:
    text = f"{type(e).__name__}: {e}".strip().splitlines()[0]
    return text[:300]


def check_qat(model, x, targets, workdir: str) -> dict:
    import numpy as np

    import tfcompress.pruning as P
    from tfcompress.export import to_tflite
    from tfcompress.quantization import quantize_aware

    steps = len(x) // 32
    pruned = compile_model(_copy(model))
    fit(pruned, x, targets, 1, [P.Pruning(P.PolynomialDecay(0.0, 0.5, begin_step=0,
                                                             end_step=steps, frequency=5))])
    q = compile_model(quantize_aware(pruned), 1e-4)
    fit(q, x, targets, 1)
    path = os.path.join(workdir, "model_int8.tflite")
    report = to_tflite(q, path, "int8", representative_data=x[:200])  # for any float layer
    probe = x[-200:]
    keras_out = outputs_of(q, probe)
    file_out = tflite_outputs(path, q, probe)
    agreements, box_error = [], None
    for box, a, b in zip(_regression_outputs(q), keras_out, file_out, strict=True):
        if box:
            box_error = float(np.sqrt(np.mean((a - b) ** 2)) / max(1e-6, float(np.std(a))))
        else:
            agreements.append(float(np.mean(np.argmax(a, -1) == np.argmax(b, -1))))
    agreement = min(agreements)
    float_ops = sorted({f"{o.op} ({o.layer})" for o in report.float_ops})
    ok = report.integer_only and agreement >= AGREEMENT
    return {"ok": ok, "integer_only": report.integer_only, "agreement": agreement,
            "box_error": box_error, "float_ops": float_ops[:5],
            "size_bytes": os.path.getsize(path)}


def check_shrink(model, x, targets) -> dict:
    import tfcompress.pruning as P
    from tfcompress._macs import model_macs

    steps = len(x) // 32
    pruned = compile_model(_copy(model))
    fit(pruned, x, targets, 1, [P.Pruning(P.PolynomialDecay(0.0, 0.3, begin_step=0,
                                                             end_step=steps, frequency=5),
                                          granularity="channel")])
    small, report = P.shrink(pruned, return_report=True)
    probe = x[:64]
    diff = rel_diff(outputs_of(pruned, probe), outputs_of(small, probe))
    return {"ok": diff <= TOLERANCE and report.params_after < report.params_before,
            "max_rel_diff": diff, "param_ratio": report.param_ratio,
            "mac_ratio": report.mac_ratio, "macs": model_macs(model),
            "groups_left": len(report.left_whole)}


def check_factorize(model, x) -> dict:
    import numpy as np

    from tfcompress.lowrank import factorize
    from tfcompress.lowrank._factorize import _candidate

    ranks = {}
    from tfcompress.pruning._selection import all_layers

    for layer in all_layers(model):
        if _candidate(layer) is None:  # full rank: that of the kernel as a matrix
            k = np.asarray(layer.kernel.shape)
            ranks[layer.name] = int(min(np.prod(k[:-1]), k[-1]))
    if not ranks:
        return {"ok": False, "error": "no Dense or Conv2D layer to factorize"}
    small, report = factorize(model, ranks=ranks, return_report=True)
    probe = x[:64]
    diff = rel_diff(outputs_of(model, probe), outputs_of(small, probe))
    return {"ok": diff <= TOLERANCE, "max_rel_diff": diff, "layers": len(report.layers)}


def check_student(model, x) -> dict:
    from tfcompress.distillation import make_student

    student, report = make_student(model, 0.5, return_report=True)
    outputs_of(student, x[:8])
    return {"ok": True, "param_ratio": report.param_ratio, "mac_ratio": report.mac_ratio}


def _copy(model):
    import keras

    from tfcompress._graph import copying_loaded_code

    with copying_loaded_code():
        new = keras.models.clone_model(model)
    new.set_weights(model.get_weights())
    return new


def run_one(name: str) -> dict:
    import keras

    keras.utils.set_random_seed(0)
    row: dict = {"network": name}
    start = time.time()
    model, wide = build(name)
    row["input"] = "x".join(str(d) for d in model.inputs[0].shape[1:])
    row["params"] = int(model.count_params())
    for layer in model._flatten_layers():  # moving statistics that settle in a few epochs
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = 0.9
    x, targets = synthetic(model, 800, wide)
    compile_model(model)
    fit(model, x, targets, EPOCHS.get(name, 3))
    with tempfile.TemporaryDirectory() as tmp:
        for key, check in (("qat", lambda: check_qat(model, x, targets, tmp)),
                           ("shrink", lambda: check_shrink(model, x, targets)),
                           ("factorize", lambda: check_factorize(model, x)),
                           ("student", lambda: check_student(model, x))):
            try:
                row[key] = check()
            except Exception as e:  # noqa: BLE001 (the table states every failure)
                row[key] = {"ok": False, "error": first_line(e)}
    row["seconds"] = round(time.time() - start, 1)
    return row


NPU_TARGETS = ("ethos-u55-128", "ethos-u85-256")


def check_npu(name: str) -> dict:
    """Column (e): where the network's int8 ops run on each Ethos-U configuration."""
    import keras

    from tfcompress.export import to_tflite

    keras.utils.set_random_seed(0)
    model, wide = build(name)
    x, _ = synthetic(model, 64, wide)
    out: dict = {"ok": True}
    with tempfile.TemporaryDirectory() as tmp:
        for target in NPU_TARGETS:
            report = to_tflite(model, os.path.join(tmp, f"{target}.tflite"), "int8", x,
                               target=target, allow_cpu_ops=True, verify_data=x[:8]).npu
            cpu = [f"{o.op} ({o.layer}): {o.reason}" for o in report.cpu_ops]
            out[target] = {"npu_ops": len(report.ops) - len(cpu), "ops": len(report.ops),
                           "inference_ms": report.inference_ms, "sram_bytes": report.sram_bytes,
                           "flash_bytes": report.flash_bytes, "cpu_ops": cpu}
            out["ok"] = out["ok"] and not cpu
        out["vela_version"] = report.vela_version
    return out


def run_keras2(path: str) -> dict:
    """A Keras 2 file as a user brings it: loaded (carried over to Keras 3 and checked layer
    by layer against tf_keras), then post-training int8 calibrated on uniform [0, 1] inputs,
    and the file's top-1 agreement with the model on 200 such inputs."""
    import numpy as np

    from tfcompress import _loading
    from tfcompress.export import to_tflite

    row: dict = {"network": os.path.basename(path.rstrip("/"))}
    start = time.time()
    try:
        model = _loading.load_keras_model(path)
    except Exception as e:  # noqa: BLE001 (the table states every failure)
        return {**row, "error": first_line(e)}
    row["input"] = "x".join(str(d) for d in model.inputs[0].shape[1:])
    row["params"] = int(model.count_params())
    row["outputs"] = int(model.outputs[0].shape[-1])
    x = np.random.default_rng(0).uniform(0, 1, (200,) + tuple(model.inputs[0].shape[1:]))
    with tempfile.TemporaryDirectory() as tmp:
        try:
            report = to_tflite(model, os.path.join(tmp, "m.tflite"), "int8",
                               representative_data=x.astype("float32"))
            row["int8"] = {"ok": report.integer_only, "agreement": report.agreement,
                           "size_bytes": report.size_bytes}
        except Exception as e:  # noqa: BLE001
            row["int8"] = {"ok": False, "error": first_line(e)}
    row["seconds"] = round(time.time() - start, 1)
    return row


def cell(result: dict, kind: str) -> str:
    if "error" in result:
        return "✗ " + result["error"].replace("|", "\\|")
    mark = "✓" if result["ok"] else "✗"
    if kind == "qat":
        text = f"{mark} {100 * result['agreement']:.1f} %"
        if result.get("box_error") is not None:
            text += f", boxes RMSE {result['box_error']:.3f} σ"
        if not result["integer_only"]:
            text += "; float: " + ", ".join(result["float_ops"])
        return text
    if kind == "shrink":
        return (f"{mark} params {result['param_ratio']:.2f}x, MACs {result['mac_ratio']:.2f}x"
                f" (diff {result['max_rel_diff']:.0e})")
    if kind == "factorize":
        return f"{mark} {result['layers']} layers (diff {result['max_rel_diff']:.0e})"
    if kind == "npu":
        parts = []
        for target in NPU_TARGETS:
            r = result[target]
            parts.append(f"{target.removeprefix('ethos-')}: {r['npu_ops']}/{r['ops']} ops, "
                         f"{r['inference_ms']:.2f} ms")
        cpu = sorted({op for t in NPU_TARGETS for op in result[t]["cpu_ops"]})
        return f"{mark} " + "; ".join(parts) + ("; CPU: " + "; ".join(cpu) if cpu else "")
    return f"{mark} params {result['param_ratio']:.2f}x"


def write(rows: list[dict], out: Path, keras2_rows: list[dict]) -> None:
    import keras
    import tensorflow as tf

    (out / "coverage.json").write_text(json.dumps({"networks": rows, "keras2": keras2_rows},
                                                  indent=1) + "\n")
    lines = [
        "# Coverage: networks nobody here wrote",
        "",
        "Written by `python models/coverage.py` (see its docstring for what each column runs "
        f"and when it is ✓). TF {tf.__version__}, Keras {keras.__version__}, "
        f"{platform.machine()}.",
        "",
        "| network | input | params | (a) prune 50 % + QAT -> int8: agreement | "
        "(b) channels 30 % + shrink | (c) factorize, full rank | (d) make_student 0.5 | "
        "(e) Ethos-U NPU: ops on the NPU, Vela's estimate |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['network']} | | | ✗ {r['error']} | | | | |")
            continue
        npu = cell(r["npu"], "npu") if "npu" in r else "not run"
        lines.append(f"| {r['network']} | {r['input']} | {r['params']:,} | "
                     f"{cell(r['qat'], 'qat')} | {cell(r['shrink'], 'shrink')} | "
                     f"{cell(r['factorize'], 'factorize')} | {cell(r['student'], 'student')} "
                     f"| {npu} |")
    ok = sum(all(r.get(k, {}).get("ok") for k in ("qat", "shrink", "factorize", "student"))
             for r in rows)
    lines += ["", f"{ok} of {len(rows)} networks pass columns (a) to (d)."]
    npu_rows = [r for r in rows if "npu" in r]
    if npu_rows:
        on_npu = sum(bool(r["npu"].get("ok")) for r in npu_rows)
        version = next((r["npu"].get("vela_version") for r in npu_rows
                        if r["npu"].get("vela_version")), "?")
        lines.append(f"{on_npu} of {len(npu_rows)} networks run every op on the NPU of both "
                     f"configurations (e), as Vela {version} compiles them with its default "
                     "system configuration and memory mode for each.")
    lines.append("")
    if keras2_rows:
        lines += [
            "## Keras 2 files",
            "",
            "Files written by Keras 2 (`python models/coverage.py --keras2 FILE ...`): each is "
            "read by tf_keras, rebuilt in Keras 3 and checked layer by layer (outputs within "
            "1e-5), then exported to int8 calibrated on uniform [0, 1] inputs; the agreement "
            "is the file's top-1 against the Keras 3 model on 200 such inputs. Random inputs "
            "are far from what these models were trained on and give near-tied outputs, so "
            "the agreement is a lower bound; ✓ means integer-only.",
            "",
            "| file | input | params | loaded and verified | int8: integer-only, agreement |",
            "|---|---|---|---|---|",
        ]
        for r in keras2_rows:
            if "error" in r:
                lines.append(f"| {r['network']} | | | ✗ {r['error']} | |")
                continue
            q = r["int8"]
            text = ("✗ " + q["error"] if "error" in q else
                    f"{'✓' if q['ok'] else '✗'} {100 * q['agreement']:.1f} %")
            lines.append(f"| {r['network']} | {r['input']} | {r['params']:,} | ✓ | {text} |")
        lines.append("")
    (out / "coverage.md").write_text("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", help="comma-separated network names")
    parser.add_argument("--out", default=str(HERE), help="folder for coverage.json/.md")
    parser.add_argument("--keras2", nargs="*", default=[], metavar="FILE",
                        help="Keras 2 .h5 files or SavedModel directories to check as well")
    parser.add_argument("--update", action="store_true",
                        help="replace only the rows run now in an existing coverage.json")
    parser.add_argument("--npu-only", action="store_true",
                        help="run only column (e), the Ethos-U NPU, keeping the others")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    parser.add_argument("--one-npu", help=argparse.SUPPRESS)
    parser.add_argument("--one-keras2", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_one(args.one)))
        return
    if args.one_npu:
        print(json.dumps(_checked(lambda: check_npu(args.one_npu))))
        return
    if args.one_keras2:
        print(json.dumps(run_keras2(args.one_keras2)))
        return
    names = args.only.split(",") if args.only is not None else NETWORKS
    names = [n for n in names if n]
    unknown = [n for n in names if n not in NETWORKS]
    if unknown:
        sys.exit(f"unknown network(s) {unknown}; known: {', '.join(NETWORKS)}")
    out = Path(args.out)
    if args.npu_only:
        old = json.loads((out / "coverage.json").read_text())
        for row in old["networks"]:
            if row["network"] in names:
                row["npu"] = _in_subprocess("--one-npu", row["network"])
                print(f"{row['network']}: npu {'ok' if row['npu'].get('ok') else 'CPU ops'}",
                      flush=True)
        write(old["networks"], out, old.get("keras2", []))
        return
    rows = []
    for name in names:
        row = _in_subprocess("--one", name)
        if _npu_installed():
            row["npu"] = _in_subprocess("--one-npu", name)
        rows.append(row)
        print(f"{name}: " + ", ".join(f"{k} {'ok' if row.get(k, {}).get('ok') else 'FAIL'}"
                                      for k in ("qat", "shrink", "factorize", "student")),
              flush=True)
    keras2_rows = []
    for path in args.keras2:
        row = _in_subprocess("--one-keras2", path)
        keras2_rows.append(row)
        print(f"{path}: {'FAIL' if 'error' in row else row['int8']}", flush=True)
    out.mkdir(parents=True, exist_ok=True)
    if args.update and (out / "coverage.json").exists():  # keep the rows not run this time
        old = json.loads((out / "coverage.json").read_text())
        new = {r["network"]: r for r in rows}
        rows = [new.pop(r["network"], r) for r in old["networks"]] + list(new.values())
        keras2_rows = keras2_rows or old.get("keras2", [])
    write(rows, out, keras2_rows)


def _npu_installed() -> bool:
    from tfcompress import _vela

    return _vela.installed()


def _checked(check) -> dict:
    try:
        return check()
    except Exception as e:  # noqa: BLE001 (the table states every failure)
        return {"ok": False, "error": first_line(e)}


def _in_subprocess(flag: str, name: str) -> dict:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    done = subprocess.run([sys.executable, __file__, flag, name], capture_output=True,
                          text=True, env=env)
    try:
        return json.loads(done.stdout.strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError):
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return {"network": name, "error": f"the run failed: {tail[:300]}"}


if __name__ == "__main__":
    main()
