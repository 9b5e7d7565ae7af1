"""The README and the documentation site run as written: every command line of the README and
of the site's Command line page, in order, and every Python block of the README and the
site's pages (with one epoch wherever one trains for more, to keep the suite short)."""

import re
import shlex
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from tfcompress.cli import main

ROOT = Path(__file__).parents[1]
README = (ROOT / "README.md").read_text()
DOCS = ROOT / "docs"
NOT_RUN = "# not run:"  # the first line of a block that needs what a test cannot have


def _blocks(text: str, language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", text, flags=re.S)


def _section(text: str, heading: str) -> str:
    return text.split(f"## {heading}", 1)[1].split("\n## ", 1)[0]


def _command_lines(text: str) -> list[str]:
    lines = [ln.split("  #")[0].strip() for block in _blocks(text, "bash")
             for ln in block.splitlines()]
    return [ln for ln in lines if ln]


def _docs_command_lines() -> list[str]:
    return _command_lines((DOCS / "cli.md").read_text().split("## Every command", 1)[0])


def test_the_command_line_page_shows_every_command():
    from tests.cli.test_cli import COMMANDS

    shown = {shlex.split(ln)[1] for ln in _docs_command_lines()}
    assert shown == set(COMMANDS)


def test_the_readme_stays_short_and_its_links_lead_somewhere():
    assert len(README.splitlines()) <= 150
    for target in re.findall(r"\]\(((?:docs|notebooks|models)/[^)#]*)", README):
        assert (ROOT / target).exists(), target


@pytest.mark.slow
def test_every_command_line_runs_as_written(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    docs_lines = _docs_command_lines()
    readme_lines = [ln for ln in _command_lines(_section(README, "Command line"))
                    if ln not in docs_lines]
    for line in docs_lines + readme_lines:
        words = shlex.split(line)
        assert words[0] == "tfcompress"
        result = runner.invoke(main, words[1:])
        assert result.exit_code == 0, f"{line}\n{result.output}"
    assert Path("out/report.json").is_file() and Path("pruned_int8.tflite").is_file()
    assert Path("micro/cnn.h").is_file() and Path("debug").is_dir()
    assert Path("npu/cnn_vela.tflite").is_file() and Path("npu/cnn_ops.h").is_file()


def _run(code: str, where: str) -> dict:
    code = re.sub(r"epochs=\d+", "epochs=1", code)
    namespace: dict = {}
    exec(compile(code, where, "exec"), namespace)  # noqa: S102 (our own documentation)
    return namespace


@pytest.mark.slow
def test_the_readme_python_block_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (code,) = _blocks(_section(README, "Use it from Python"), "python")
    result = _run(code, "README.md")["result"]
    assert result.final.tflite_path.endswith(".tflite") and (tmp_path / "out" / "report.md"
                                                               ).is_file()
    assert (tmp_path / "pruned_int8.tflite").is_file()


def _folders_and_model(root: Path) -> None:
    """What the data page's stream example reads: images/{train,val,test} class folders of
    96x96 pictures, and model.keras that classifies them."""
    from PIL import Image

    import tfcompress as tfc

    ds = tfc.data.load("shapes", image_size=96, num_samples=120, seed=0)
    classes = sorted(set(int(c) for c in ds.y_train))[:3]
    for part, (x, y) in {"train": (ds.x_train, ds.y_train), "val": (ds.x_test, ds.y_test),
                         "test": (ds.x_test, ds.y_test)}.items():
        for i, (image, label) in enumerate(zip(x, y, strict=True)):
            if int(label) in classes:
                folder = root / "images" / part / str(label)
                folder.mkdir(parents=True, exist_ok=True)
                Image.fromarray((image * 255).astype(np.uint8)).save(folder / f"{i}.png")
    import keras

    inputs = keras.Input((96, 96, 3))
    x = keras.layers.Rescaling(1 / 255)(inputs)
    x = keras.layers.Conv2D(8, 3, strides=2, activation="relu")(x)
    x = keras.layers.Conv2D(16, 3, strides=2, activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(3)(x))
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    model.save(root / "model.keras")


@pytest.mark.slow
@pytest.mark.parametrize("page", sorted(p.relative_to(DOCS).as_posix() for p in DOCS.rglob("*.md")
                                        if "```python" in p.read_text()))
def test_every_python_block_of_the_site_runs(page, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    blocks = [b for b in _blocks((DOCS / page).read_text(), "python")
              if not b.startswith(NOT_RUN)]
    if page == "data.md":
        _folders_and_model(tmp_path)
    for code in blocks:
        # the pipeline's quickest built-in recipe wherever a page shows the default one
        _run(code.replace('"default"', '"quick"'), page)
