"""Playbooks: Jinja2 runbooks and customer notices rendered from regions.yaml and a move's record.

Templates live in ``playbooks/templates``; every one is rendered with ``StrictUndefined``, so a
missing variable fails loudly instead of printing an empty gap in a runbook someone follows.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import jinja2

TEMPLATES = Path(__file__).with_name("templates")


@lru_cache(maxsize=1)
def environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES)),
        undefined=jinja2.StrictUndefined,
        autoescape=False,  # markdown/text; HTML is produced by escaping in the converter
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
