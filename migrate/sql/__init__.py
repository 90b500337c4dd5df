"""The mover's SQL, one module per phase, each a mixin over :mod:`migrate.sql.reach` (the rows
of a workspace); :class:`migrate.sqlbuild.Builder` composes them. Only ``psycopg.sql``
composition: identifiers through ``sql.Identifier``, values as parameters.
"""
