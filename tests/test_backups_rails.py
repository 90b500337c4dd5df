"""Backup and record-level restore on a realistic second application: the Rails-style schema of
tests/test_real_app_rails.py (polymorphic taggings and ActiveStorage attachments, blobs owned
through attachments, a per-tenant sequence trigger numbering conversations, json columns)."""

from __future__ import annotations

import psycopg

from residency.backups import create_backup, diff_backups, restore, verify_backup
from test_real_app_rails import rails  # noqa: F401 - the fixture

GONE = [
    "DELETE FROM taggings WHERE taggable_type = 'Conversation' AND taggable_id = %(c)s",
    "CREATE TEMP TABLE gone_blobs AS SELECT a.blob_id FROM active_storage_attachments a JOIN messages m ON a.record_type = 'Message' AND m.id = a.record_id"
    " WHERE m.conversation_id = %(c)s",
    "DELETE FROM active_storage_attachments a USING messages m WHERE a.record_type = 'Message' AND m.id = a.record_id AND m.conversation_id = %(c)s",
    "DELETE FROM active_storage_blobs b WHERE b.id IN (SELECT blob_id FROM gone_blobs)"
    " AND NOT EXISTS (SELECT 1 FROM active_storage_attachments x WHERE x.blob_id = b.id)",
    "DELETE FROM messages WHERE conversation_id = %(c)s",
    "DELETE FROM conversations WHERE id = %(c)s",
]


def _rows(dsn: str, c: int) -> dict[str, list]:
    q = {
        "conversations": "SELECT id, account_id, inbox_id, uuid, assignee_id, additional_attributes::text, display_id FROM conversations WHERE id = %(c)s",
        "messages": "SELECT id, content, sender_type, sender_id, content_attributes::text FROM messages WHERE conversation_id = %(c)s ORDER BY id",
        "taggings": "SELECT * FROM taggings WHERE taggable_type = 'Conversation' AND taggable_id = %(c)s ORDER BY id",
        "attachments": "SELECT a.* FROM active_storage_attachments a JOIN messages m ON a.record_type = 'Message' AND m.id = a.record_id"
        " WHERE m.conversation_id = %(c)s ORDER BY a.id",
        "blobs": "SELECT b.* FROM active_storage_blobs b JOIN active_storage_attachments a ON a.blob_id = b.id JOIN messages m"
        " ON a.record_type = 'Message' AND m.id = a.record_id WHERE m.conversation_id = %(c)s ORDER BY b.id",
    }
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SET search_path = rails")
        return {k: conn.execute(v, {"c": c}).fetchall() for k, v in q.items()}


def test_rails_conversation_deleted_and_restored_with_its_dependants(env, rails):  # noqa: F811
    res = create_backup(rails, env.connections, "1")
    assert res.rows > 0 and res.aws_region == "us-west-2"
    assert verify_backup(rails, env.connections, res.id).ok
    with psycopg.connect(env.dsn("us"), autocommit=True) as conn:
        conn.execute("SET search_path = rails")
        (c,) = conn.execute("SELECT m.conversation_id FROM messages m JOIN active_storage_attachments a ON a.record_type = 'Message'"
                            " AND a.record_id = m.id WHERE m.account_id = 1 ORDER BY 1 LIMIT 1").fetchone()
    before = _rows(env.dsn("us"), c)
    assert all(before.values()), before
    with psycopg.connect(env.dsn("us")) as conn:
        conn.execute("SET search_path = rails")
        for stmt in GONE:
            conn.execute(stmt, {"c": c})
        conn.commit()
    d = {t.table: t for t in diff_backups(rails, env.connections, "1", res.id).tables}
    assert d["conversations"].keys["deleted"] == [c]
    assert d["messages"].deleted == len(before["messages"]) and d["taggings"].deleted == len(before["taggings"])
    r = restore(rails, env.connections, "1", res.id, table="conversations", keys=[str(c)])
    assert r.verified
    # back exactly as it was: the display_id trigger did not renumber it, the owned blobs came with their attachments
    assert _rows(env.dsn("us"), c) == before
    assert diff_backups(rails, env.connections, "1", res.id).changes == 0
