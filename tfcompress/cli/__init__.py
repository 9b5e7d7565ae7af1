"""The `tfcompress` command line: one group, one module per command.

Command modules import TensorFlow only inside the command body, so `tfcompress --help` is
instant.
"""

import click

from tfcompress._version import __version__
from tfcompress.cli.bench import bench_command
from tfcompress.cli.compress import compress_command
from tfcompress.cli.debug import debug_command
from tfcompress.cli.demo import demo_command
from tfcompress.cli.distill import distill_command
from tfcompress.cli.export import export_command
from tfcompress.cli.factorize import factorize_command
from tfcompress.cli.inspect import inspect_command
from tfcompress.cli.prune import prune_command
from tfcompress.cli.qat import qat_command
from tfcompress.cli.recipes import recipes_command
from tfcompress.cli.sensitivity import sensitivity_command


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="tfcompress")
def main():
    """Make Keras 3 image models small and fast for edge devices, and prove it.

    Start with `tfcompress demo`: it trains a model on built-in data and compresses it step by
    step (channel pruning, pruning, QAT, int8 export), measuring each step in LiteRT, with no
    network. `tfcompress compress` does the same for your model and data.
    """


for _command in (demo_command, export_command, bench_command, inspect_command, prune_command,
                 qat_command, distill_command, factorize_command, compress_command,
                 debug_command, sensitivity_command, recipes_command):
    main.add_command(_command)
