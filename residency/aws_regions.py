"""The AWS region names that exist, from botocore's partition data, used to reject typos in
regions.yaml.

botocore (a dependency through boto3) ships AWS's partitions and their regions in
``botocore/data/partitions.json``; upgrading botocore (``./run upgrade botocore``) is how a new
region becomes known.
"""

from __future__ import annotations

import json
from pathlib import Path

import botocore

COMMERCIAL = "aws"


def _partitions() -> dict[str, frozenset[str]]:
    """partition id -> its region names (without the ``aws-global``-style pseudo-regions)."""
    data = Path(botocore.__file__).parent / "data"
    doc = json.loads((data / "partitions.json").read_text(encoding="utf-8"))
    return {
        p["id"]: frozenset(name for name in p.get("regions", {}) if not name.endswith("-global"))
        for p in doc["partitions"]
    }


PARTITIONS: dict[str, frozenset[str]] = _partitions()

AWS_REGIONS: frozenset[str] = PARTITIONS[COMMERCIAL]
"""Regions of the commercial partition: the only ones a stack is built for."""

OTHER_PARTITIONS: dict[str, str] = {
    region: partition for partition, regions in PARTITIONS.items() if partition != COMMERCIAL for region in regions
}
"""Regions of AWS's other partitions: real, but a stack here is built for the commercial
partition (its ARNs, endpoints and accounts), so they are refused with a message that says so."""
