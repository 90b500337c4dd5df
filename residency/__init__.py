"""residency: run one SaaS product in several data-residency regions and move workspaces between them."""

__version__ = "0.1.0"
