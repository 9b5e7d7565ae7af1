"""Fixtures shared by the command-line tests."""

import pytest
from click.testing import CliRunner

from tfcompress.cli import main


@pytest.fixture
def runner():
    return CliRunner()


@pytest.fixture(scope="module")
def int8_path(trained_cnn_path, tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "m_int8.tflite"
    result = CliRunner().invoke(main, ["export", str(trained_cnn_path), "-o", str(out),
                                       "--quantize", "int8", "--data", "mnist", "--json"])
    assert result.exit_code == 0, result.output
    return out
