"""``fastconv bench --help`` names every op ``--ops`` accepts, the backward and train ops too."""
import re

from fastconv.bench import cli
from fastconv.bench.suite import BACKWARD_OPS, get_suite


def _ops_help():
    text = " ".join(cli._parser().format_help().split())  # argparse wraps the help text
    return re.search(r"--ops OP\[,OP\.\.\.\] only these ops: ([a-z0-9_, ]+)", text).group(1)


def test_ops_help_lists_every_op_that_has_cases():
    listed = [op.strip() for op in _ops_help().split(",")]
    assert set(BACKWARD_OPS) <= set(listed) and {"train", "model", "conv2d"} <= set(listed)
    for op in listed:  # each one selects at least one case of the full or backward suite
        assert get_suite("full", [op]) or get_suite("backward", [op]), op
