"""Distillation and low-rank factorization of a detector, measured on the detection card's data.

Every model below trains until its mAP@0.5 on the validation images stops improving (patience
6 after epoch 5, best weights kept), so no figure is a shorter training's:

- the teacher: the reference SSD detector (`reference_detector()`, alpha 1.0);
- its student `make_student(teacher, 0.5)` (half the channels, the teacher's largest filters
  kept), trained three ways from the same start: on the labels alone (the detection loss),
  distilled from the teacher's outputs (class scores and boxes, anchor by anchor), and
  distilled with a feature-imitation term as well (the teacher's `block7_add` map, through a
  learned projection);
- `factorize(teacher, rank_ratio=0.5)`: mAP before fine-tuning and after it.

Scores are pycocotools' mAP@0.5 and mAP@0.5:0.95 of the Keras models on the 600 test images.

    python models/detection_shapes/distill_lowrank.py   # writes distill_lowrank_results.{json,md}
"""

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # models/, for _shared
import _shared  # noqa: E402

HERE = Path(__file__).resolve().parent
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
FEATURES = ("block7_add", "block7_add")  # the stride-16 map, read by a head and by block8


def _best_map_callback(val):
    """A Keras callback that keeps the weights of the epoch with the best validation mAP@0.5
    (of the student, inside a distiller) and stops after PATIENCE epochs without a gain."""
    import keras

    from tfcompress import _training

    class BestMap(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            self.best, self.weights, self.wait, self.epochs = -1.0, None, 0, 0

        def on_epoch_end(self, epoch, logs=None):
            net = getattr(self.model, "student", self.model)
            score = _training.evaluate(net, val, "map50")
            self.epochs = epoch + 1
            if score > self.best:
                self.best, self.weights, self.wait = score, net.get_weights(), 0
            elif epoch + 1 >= _shared.FIRST_CHECK:
                self.wait += 1
                if self.wait >= _shared.PATIENCE:
                    self.model.stop_training = True

        def on_train_end(self, logs=None):
            getattr(self.model, "student", self.model).set_weights(self.weights)

    return BestMap()


def measure(seed: int, num_samples: int = 3000) -> dict:
    import keras

    from tfcompress import _training
    from tfcompress.distillation import distill, make_student
    from tfcompress.lowrank import factorize
    from tfcompress.reference import compile_for_detection, reference_detector

    ds, val = _shared.detection_data(seed, num_samples)
    test = (ds.x_test, ds.y_test)

    def scores(model, epochs=None, seconds=None):
        row = {"parameters": int(model.count_params()),
               "map50": _training.evaluate(model, test, "map50"),
               "map": _training.evaluate(model, test, "map")}
        if epochs is not None:
            row.update(epochs=epochs, seconds=round(seconds, 1))
        print(row, flush=True)
        return row

    def fit_labels(model):
        stop = _best_map_callback(val)
        start = time.perf_counter()
        model.fit(ds.x_train, ds.y_train, epochs=_shared.MAX_EPOCHS, batch_size=32, verbose=0,
                  callbacks=[stop])
        return scores(model, stop.epochs, time.perf_counter() - start)

    out = {"seed": seed, "num_samples": num_samples, "test_images": len(ds.x_test)}
    keras.utils.set_random_seed(seed)
    teacher = compile_for_detection(reference_detector(ds.input_shape, ds.num_classes), 2e-3)
    out["teacher"] = fit_labels(teacher)

    student = make_student(teacher, 0.5)
    keras.utils.set_random_seed(seed)
    out["student_labels"] = fit_labels(compile_for_detection(_training.copy_model(student),
                                                             2e-3))
    for name, features in (("student_distilled", None), ("student_distilled_features",
                                                          FEATURES)):
        keras.utils.set_random_seed(seed)
        stop = _best_map_callback(val)
        start = time.perf_counter()
        trained, _ = distill(teacher, student, ds, epochs=_shared.MAX_EPOCHS, batch_size=32,
                             learning_rate=2e-3, feature_layers=features, callbacks=[stop])
        out[name] = scores(trained, stop.epochs, time.perf_counter() - start)

    low, report = factorize(teacher, rank_ratio=0.5, return_report=True)
    out["factorized"] = {"before_finetuning": scores(low),
                         "factorized_layers": sum(r.factorized for r in report.layers)}
    keras.utils.set_random_seed(seed)
    out["factorized"]["after"] = fit_labels(compile_for_detection(low, 1e-3))
    return out


def markdown(r: dict) -> str:
    def pct(v):
        return f"{100 * v:.2f} %"

    t = r["teacher"]

    def row(words, s):
        epochs = f"{s['epochs']}" if "epochs" in s else "-"
        return (f"| {words} | {s['parameters']:,} | {epochs} | {pct(s['map50'])} "
                f"({100 * (s['map50'] - t['map50']):+.2f}) | {pct(s['map'])} |")

    f = r["factorized"]
    rows = [
        "| model | parameters | epochs | mAP@0.5 (vs teacher, points) | mAP@0.5:0.95 |",
        "|---|---|---|---|---|",
        row("teacher: reference SSD detector", t),
        row("student (half the channels), trained on the labels", r["student_labels"]),
        row("student distilled: class scores and boxes", r["student_distilled"]),
        row("student distilled: scores, boxes and `block7_add` features",
            r["student_distilled_features"]),
        row(f"teacher factorized at half rank ({f['factorized_layers']} layers), "
            "before fine-tuning", f["before_finetuning"]),
        row("the same, fine-tuned on the labels", f["after"]),
    ]
    gain = r["student_distilled"]["map50"] - r["student_labels"]["map50"]
    gain_f = r["student_distilled_features"]["map50"] - r["student_labels"]["map50"]
    return (
        "# Distillation and factorization of a detector\n\n"
        "Produced by `python models/detection_shapes/distill_lowrank.py`: `shapes-detect` at "
        f"96 x 96 ({r['num_samples']:,} images, seed {r['seed']}: the detection card's data), "
        "every model "
        "trained until its validation mAP@0.5 stopped improving (patience 6, best weights "
        f"kept), scored by pycocotools on the {r['test_images']} test images (Keras models, "
        "float32). The three students start from the same `make_student(teacher, 0.5)`.\n\n"
        + "\n".join(rows)
        + f"\n\nDistillation over training on the labels: {100 * gain:+.2f} points of mAP@0.5 "
        f"from outputs alone, {100 * gain_f:+.2f} with the feature term.\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--num-samples", type=int, default=3000,
                        help="Images of shapes-detect (fewer for a quick try).")
    args = parser.parse_args()
    _shared.write_results(HERE, "distill_lowrank_results", measure(args.seed, args.num_samples),
                          markdown)


if __name__ == "__main__":
    main()
