"""Orchestration: the layer above the mover.

Move requests from sales and support (:mod:`.requests`), the worker fleet that runs them inside
their windows (:mod:`.worker`), customer notices (:mod:`.notify`), and the small modules they share
(:mod:`.windows`, :mod:`.estimates`, :mod:`.moving`). Everything here may import the foundation
(``residency.*``), the mover (``residency.migrate``) and the playbooks; nothing below imports it.
"""
