"""Operator access (issue 13): support staff see one workspace's rows, with its customer's consent,
in its home region only, for as long as agreed.

- :mod:`.scope`: the per-grant schema of security-barrier views, composed from the mover's reach
  graph (so "a workspace's rows" means the same thing here as in a move);
- :mod:`.lifecycle`: request (policy), consent (approval or a one-time token), the grant (a
  temporary login role), its password, revocation, expiry and the sweep.

An engine beside the mover: it imports the mover's graph and SQL builder; the mover ends grants
through the foundation record :mod:`residency.grants`, so nothing imports back.
"""
