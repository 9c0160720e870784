"""The command line starts without torch: crawl, curate (without a detector), shards info and
--help must not pay ~1.2 s of imports for a model they never run."""
from __future__ import annotations

import subprocess
import sys

import pytest

CHECK = """
import sys
from facesift import cli
cli.build_parser()
import facesift.curate.pipeline, facesift.curate.crawl, facesift.shards.reader, facesift.shards.split
heavy = sorted(m for m in ("torch", "webdataset", "torchvision") if m in sys.modules)
print(",".join(heavy))
"""


@pytest.mark.timeout(120)
def test_the_parser_and_the_curate_path_do_not_import_torch():
    out = subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"imported at start-up: {out.stdout.strip()}"
