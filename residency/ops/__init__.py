"""Orchestration: the layer above the mover.

Move requests from sales and support (:mod:`.requests`), the worker fleet that runs them inside
their windows (:mod:`.worker`), customer notices (:mod:`.notify`), and the mover as they see it
(:mod:`.moving`). Everything here may import the foundation (``residency.*``) and the engines
(``residency.migrate``, ``residency.playbooks``, ...); nothing below imports it.
"""
