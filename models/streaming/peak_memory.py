"""Peak memory of `tfcompress compress` on image folders of 5,000, 20,000 and 50,000 images.

    python models/streaming/peak_memory.py [--sizes 5000 20000 50000] [--before REV]
                                           [--work DIR]

1. Writes folders of 64x64 RGB PNGs from the `shapes` generator (one sub-folder per class)
   and trains the reference CNN at 64x64 on the first 5,000 images (saved as a `.keras`).
2. Runs `tfcompress compress MODEL --data FOLDER` (recipe: channel pruning 50 % for one
   epoch, QAT one epoch, int8 export) in a fresh process per folder, and takes that process's
   peak resident memory from the kernel (`wait4`'s `ru_maxrss`).
3. With `--before REV`, runs the same commands with tfcompress as it was at git revision
   `REV` (a worktree), whose folder loader decoded every image into one float32 array: the
   in-memory path, side by side in the same run.

Writes `peak_memory.json`, `.md` and `.png` beside this script.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).parent
ROOT = HERE.parent.parent
RECIPE = {"name": "memory", "steps": [
    {"prune": {"granularity": "channel", "sparsity": 0.5, "round_to": 8, "epochs": 1}},
    {"qat": {"epochs": 1}}, {"export": {"mode": "int8"}}]}


def write_folder(root: Path, count: int, seed: int) -> None:
    """`count` 64x64 PNGs of `shapes`, in chunks so that the writer stays small too."""
    from PIL import Image

    from tfcompress.data import SHAPE_CLASSES, make_shapes

    if (root / "done").exists():
        return
    for name in SHAPE_CLASSES:
        (root / name).mkdir(parents=True, exist_ok=True)
    for chunk, start in enumerate(range(0, count, 5000)):
        x, y = make_shapes(min(5000, count - start), image_size=64, seed=seed + chunk)
        pixels = (x * 255).round().astype(np.uint8)
        for i, (image, label) in enumerate(zip(pixels, y, strict=True)):
            Image.fromarray(image).save(root / SHAPE_CLASSES[label] / f"{start + i:06d}.png")
    (root / "done").write_text("")


def train_model(folder: Path, path: Path) -> None:
    import keras

    import tfcompress as tfc

    keras.utils.set_random_seed(0)
    ds = tfc.data.load(folder)
    model = tfc.reference.compile_for_classification(
        tfc.reference.reference_cnn((64, 64, 3), ds.num_classes))
    model.fit(ds.x_train, ds.y_train, epochs=8, batch_size=64, verbose=0)
    model.save(path)


def peak_of(command: list[str], env: dict) -> tuple[float, float, int]:
    """(peak resident memory in MB, seconds, exit status) of one process."""
    start = time.perf_counter()
    # Run from a neutral folder: `python -m` puts the working directory first on sys.path.
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, cwd=tempfile.gettempdir())
    _, status, usage = os.wait4(proc.pid, 0)
    err = proc.stderr.read()
    code = os.waitstatus_to_exitcode(status)
    if code:
        print(err[-2000:], file=sys.stderr)
    return usage.ru_maxrss / 1024, time.perf_counter() - start, code


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="+", default=[5000, 20000, 50000])
    parser.add_argument("--before", help="a git revision: also run its in-memory loader")
    parser.add_argument("--work", default=os.path.join(tempfile.gettempdir(), "tfc-memory"))
    args = parser.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    for n in args.sizes:
        write_folder(work / f"images_{n}", n, seed=0)
    model = work / "cnn64.keras"
    if not model.exists():
        train_model(work / f"images_{min(args.sizes)}", model)
    (work / "recipe.json").write_text(json.dumps(RECIPE))
    paths = {"streaming (this tfcompress)": str(ROOT)}
    if args.before:
        old = work / "before"
        if not old.exists():
            subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(old),
                            args.before], check=True, capture_output=True)
        paths[f"in memory (tfcompress at {args.before})"] = str(old)
    rows = []
    for n in args.sizes:
        for label, source in paths.items():
            out = work / f"out_{n}_{len(rows)}"
            env = {**os.environ, "PYTHONPATH": source, "TF_CPP_MIN_LOG_LEVEL": "3"}
            command = [sys.executable, "-m", "tfcompress", "compress", str(model),
                       "--data", str(work / f"images_{n}"), "--recipe",
                       str(work / "recipe.json"), "-o", str(out), "--runs", "20", "--json"]
            mb, seconds, code = peak_of(command, env)
            used = subprocess.run([sys.executable, "-c", "import tfcompress; print("
                                   "tfcompress.__file__)"], env=env, capture_output=True,
                                  text=True, cwd=tempfile.gettempdir()).stdout.strip()
            assert used.startswith(source), (used, source)  # the code this row is about
            report = json.loads((out / "report.json").read_text()) if code == 0 else {}
            final = report.get("final", {})
            rows.append({"images": n, "path": label, "peak_mb": round(mb),
                         "seconds": round(seconds), "exit": code,
                         "accuracy": final.get("accuracy"),
                         "baseline_accuracy": report.get("baseline", {}).get("accuracy")})
            print(json.dumps(rows[-1]), flush=True)
    write(rows)


def write(rows: list[dict]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    (HERE / "peak_memory.json").write_text(json.dumps(rows, indent=2) + "\n")
    lines = ["# Peak memory of `tfcompress compress` on image folders",
             "", "Produced by `python models/streaming/peak_memory.py --before <rev>`: 64x64 "
             "RGB PNGs of `shapes`, the reference CNN at 64x64, recipe channel pruning 50 % "
             "(1 epoch), QAT (1 epoch), int8 export; one fresh process per run, peak resident "
             "memory from the kernel (`ru_maxrss`).", "",
             "| images | path | peak memory (MB) | time (s) | int8 accuracy |",
             "|---|---|---|---|---|"]
    for r in rows:
        acc = "failed" if r["exit"] else f"{100 * r['accuracy']:.2f} %"
        lines.append(f"| {r['images']:,} | {r['path']} | {r['peak_mb']:,} | {r['seconds']} | "
                     f"{acc} |")
    (HERE / "peak_memory.md").write_text("\n".join(lines) + "\n")
    fig, ax = plt.subplots(figsize=(6, 4), constrained_layout=True)
    for path in dict.fromkeys(r["path"] for r in rows):
        mine = [r for r in rows if r["path"] == path]
        ax.plot([r["images"] for r in mine], [r["peak_mb"] for r in mine], "o-", label=path)
    ax.axhline(2048, color="tab:red", linestyle="--", linewidth=1, label="2 GB")
    ax.set_xlabel("images in the folder (64x64 RGB)")
    ax.set_ylabel("peak resident memory (MB)")
    ax.set_title("tfcompress compress --data FOLDER")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.savefig(HERE / "peak_memory.png", dpi=110)


if __name__ == "__main__":
    main()
