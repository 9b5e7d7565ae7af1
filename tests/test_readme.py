"""The README runs as written: every command line of its command-line section, in order, and
its Python block (with one epoch wherever it trains for more, to keep the suite short)."""

import re
import shlex
from pathlib import Path

import pytest
from click.testing import CliRunner

from tfcompress.cli import main

README = (Path(__file__).parents[1] / "README.md").read_text()


def _block(heading: str, language: str) -> str:
    section = README.split(f"## {heading}", 1)[1]
    return section.split(f"```{language}\n", 1)[1].split("```", 1)[0]


def _command_lines() -> list[str]:
    lines = [ln.split("  #")[0].strip() for ln in _block("Command line", "bash").splitlines()]
    return [ln for ln in lines if ln]


def test_the_command_section_shows_every_command():
    from tests.cli.test_cli import COMMANDS

    shown = {shlex.split(ln)[1] for ln in _command_lines()}
    assert shown == set(COMMANDS)


@pytest.mark.slow
def test_every_readme_command_line_runs_as_written(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    for line in _command_lines():
        words = shlex.split(line)
        assert words[0] == "tfcompress"
        result = runner.invoke(main, words[1:])
        assert result.exit_code == 0, f"{line}\n{result.output}"
    assert Path("out/report.json").is_file() and Path("pruned_int8.tflite").is_file()


@pytest.mark.slow
def test_the_readme_python_block_runs(tmp_path, monkeypatch):
    code = re.sub(r"epochs=\d+", "epochs=1", _block("Use it from Python", "python"))
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)  # noqa: S102 (our own README)
    result = namespace["result"]
    assert result.final.tflite_path.endswith(".tflite") and (tmp_path / "out" / "report.md"
                                                               ).is_file()
    assert namespace["teacher"].trainable  # the Distiller left the user's model as it was
