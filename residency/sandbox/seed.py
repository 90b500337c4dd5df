"""Fill the sandbox's regions with generated workspaces: deterministic, skewed, fast.

:func:`seed` creates ``workspaces`` workspaces spread round-robin over the catalogue's active
regions (the first, biggest, in the first active region), about ``rows`` rows in all (or about
``size_mb`` MB), with the same data for the same ``seed`` on fresh databases. Sizes are skewed
like a real product: one big workspace (about a third of the rows) and a long tail of small
ones. Rows are written with COPY (text format, lines built directly); foreign keys are consistent
by construction and are not re-checked row by row during the load (``session_replication_role =
replica`` for superusers, as bulk loaders do). Ids come from each table's identity sequence, so
they stay in the region's id range (see schema.sql) and a second seed adds to the first.

Every workspace is registered in the control-plane directory with its home region (plus one
audit entry per seed run per region), and gets a few objects (a few KB each) under its prefix
(``cat.workspace.prefix_for(id)``) in the region's buckets.
"""

from __future__ import annotations

import hashlib
import json
import random
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Iterable

import psycopg
from psycopg import sql

from .. import audit, directory
from ..catalogue import Catalogue
from ..connections import Connections, s3_client
from ..db import connect
from ..errors import InputError, OperationError

TABLES = (
    "workspaces", "memberships", "channels", "conversations", "messages",
    "attachments", "attachment_previews", "reactions",
)
"""Workspace tables in foreign-key order (``users`` is global and counted per region)."""

_COLUMNS: dict[str, tuple[str, ...]] = {
    "users": ("id", "email", "display_name", "locale", "profile", "created_at"),
    "workspaces": ("id", "name", "slug", "plan", "settings", "created_at"),
    "memberships": ("workspace_id", "user_id", "role", "joined_at"),
    "channels": ("id", "workspace_id", "name", "topic", "is_private", "tags", "created_by", "created_at"),
    "conversations": ("id", "workspace_id", "channel_id", "subject", "participant_ids", "metadata", "created_at"),
    "messages": ("id", "workspace_id", "conversation_id", "author_id", "parent_id", "body", "mentions", "payload", "created_at", "edited_at"),
    "attachments": ("id", "message_id", "filename", "content_type", "size_bytes", "object_key", "sha256", "created_at"),
    "attachment_previews": ("id", "attachment_id", "width", "height", "data"),
    "reactions": ("id", "subject_type", "subject_id", "user_id", "emoji", "created_at"),
}
_SEQ_TABLES = ("users", "workspaces", "channels", "conversations", "messages", "attachments", "attachment_previews", "reactions")

BYTES_PER_ROW = 190  # measured average on-disk size (heap + indexes) of a generated row

# deterministic vocabularies, unicode included on purpose
_NAMES = ["Zoë", "José", "Ólafur", "Søren", "Łukasz", "Ирина", "Δημήτρης", "李娜", "佐藤 花子", "김민준",
          "Nguyễn Văn An", "Ayşe", "François", "Björk", "Priya", "Aroha", "محمد", "Noa", "Mia", "Liam",
          "Oliver", "Chloé", "Mateo", "Ana-María", "O'Brien", "Jürgen", "Siobhán", "Raúl", "Ngaio", "Kai"]
_WORDS = ["launch", "roadmap", "bug", "deploy", "café", "naïve", "façade", "über", "résumé", "😀", "🚀",
          "数据", "résidence", "привет", "γειά", "こんにちは", "안녕", "mañana", "coöperate", "ok", "ship",
          "review", "incident", "retro", "design", "spec", "budget", "hiring", "onboarding", "Q3", "tab\there",
          "line\nbreak", "back\\slash", "quote\"d", "emoji 🎉", "✓ done", "€100", "naïve café", "über-fast"]
_CHANNELS = ["general", "random", "engineering", "design", "sales", "support", "incidents", "announcements",
             "café", "日本語", "équipe", "team-ü", "ops", "data", "hiring", "social"]
_EMOJI = ["👍", "❤️", "😂", "🎉", "👀", "🚀", "✅", "🙏", "🔥", "💯", ":shipit:", "+1"]
_TYPES = [("report.pdf", "application/pdf"), ("screenshot.png", "image/png"), ("notes.txt", "text/plain"),
          ("日程表.xlsx", "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"),
          ("photo été.jpg", "image/jpeg"), ("data.csv", "text/csv"), ("архив.zip", "application/zip")]
_LOCALES = ["en-US", "en-GB", "de-DE", "fr-FR", "ja-JP", "ko-KR", "pt-BR", "es-ES", "el-GR", "ru-RU", None]
_PLANS = ["free", "pro", "enterprise"]
_EPOCH = datetime(2024, 1, 1, tzinfo=timezone.utc)


@dataclass
class SeedResult:
    seed: int
    workspaces: dict[str, list[int]]
    """region -> workspace ids created there, in creation order."""
    home: dict[int, str]
    """workspace id -> home region."""
    biggest: int
    """The id of the biggest workspace (most rows)."""
    rows: dict[int, dict[str, int]]
    """workspace id -> table -> rows of that workspace (tables in :data:`TABLES`)."""
    users: dict[str, int]
    """region -> rows added to the global users table."""
    objects: dict[int, list[tuple[str, str]]]
    """workspace id -> (bucket, key) of every object put under its prefix."""
    seconds: float = 0.0
    total_rows: int = 0

    @property
    def biggest_region(self) -> str:
        return self.home[self.biggest]

    @property
    def workspace_ids(self) -> list[int]:
        return [w for ids in self.workspaces.values() for w in ids]

    def rows_of(self, workspace_id: int) -> int:
        return sum(self.rows[workspace_id].values())

    def smallest_in(self, region: str) -> int:
        return min(self.workspaces[region], key=self.rows_of)


def _esc(s: str) -> str:
    return s.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")


def _ts(seconds: float) -> str:
    return (_EPOCH + timedelta(seconds=seconds)).strftime("%Y-%m-%d %H:%M:%S.%f+00")


def _arr(ids: Iterable[int]) -> str:
    return "{" + ",".join(str(i) for i in ids) + "}"


def _json(v: Any) -> str:
    return _esc(json.dumps(v, ensure_ascii=False, sort_keys=True))


N = "\\N"


@dataclass
class _Plan:
    index: int
    region: str
    budget: int


def _sizes(workspaces: int, rows: int, rng: random.Random) -> list[int]:
    """Rows per workspace: one big (about a third), the rest a jittered power-law tail."""
    if workspaces == 1:
        return [rows]
    big = rows // 3
    weights = [1.0 / (i ** 0.9) * (0.6 + 0.8 * rng.random()) for i in range(1, workspaces)]
    total = sum(weights)
    rest = rows - big
    tail = [max(20, int(rest * w / total)) for w in weights]
    return [max(big, max(tail) + 1)] + tail


def seed(
    cat: Catalogue,
    conns: Connections,
    *,
    workspaces: int = 24,
    rows: int | None = None,
    size_mb: float | None = None,
    seed: int = 1,
    regions: list[str] | None = None,
    objects: bool = True,
    progress: Callable[[str], None] | None = None,
) -> SeedResult:
    """Generate and load workspaces into every active region of ``cat`` reachable in ``conns``."""
    say = progress or (lambda _: None)
    if workspaces < 1:
        raise InputError("--workspaces must be at least 1")
    if rows is not None and size_mb is not None:
        raise InputError("give either --rows or --size-mb, not both")
    if size_mb is not None:
        if size_mb <= 0:
            raise InputError("--size-mb must be positive")
        rows = int(size_mb * 1024 * 1024 / BYTES_PER_ROW)
    rows = 100_000 if rows is None else rows
    if rows < workspaces * 20:
        raise InputError(f"--rows {rows} is too few for {workspaces} workspaces (at least 20 per workspace)")
    active = regions or [r.name for r in cat.regions.values() if r.is_active]
    active = [r for r in active if r in conns.regions]
    if not active:
        raise OperationError("no active region is reachable: run `residency sandbox up`")
    t0 = time.monotonic()
    rng = random.Random(seed)
    sizes = _sizes(workspaces, rows, rng)
    plans = [_Plan(i, active[i % len(active)], sizes[i]) for i in range(workspaces)]
    by_region: dict[str, list[_Plan]] = {r: [p for p in plans if p.region == r] for r in active}

    result = SeedResult(seed, {r: [] for r in active}, {}, 0, {}, {}, {})

    def run_region(region: str) -> tuple[str, dict[str, Any]]:
        # each region's data depends only on (seed, region position), never on thread timing
        rrng = random.Random(f"{seed}:{active.index(region)}")
        return region, _load_region(cat, conns.region(region).dsn, by_region[region], rrng, say)

    with ThreadPoolExecutor(max_workers=len(active)) as pool:
        loaded = list(pool.map(run_region, active))
    for region, out in loaded:
        result.workspaces[region] = out["ids"]
        result.users[region] = out["users"]
        for wid, counts in out["rows"].items():
            result.rows[wid] = counts
            result.home[wid] = region
    result.biggest = max(result.rows, key=result.rows_of)
    result.total_rows = sum(result.rows_of(w) for w in result.rows) + sum(result.users.values())

    _register(conns.control_dsn, result)
    if objects:
        _put_objects(cat, conns, result, seed, loaded)
    result.seconds = time.monotonic() - t0
    say(f"seeded {len(result.rows)} workspaces, {result.total_rows:,} rows in {result.seconds:.1f}s")
    return result


def _load_region(cat: Catalogue, dsn: str, plans: list[_Plan], rng: random.Random, say: Callable[[str], None]) -> dict[str, Any]:
    if not plans:
        return {"ids": [], "users": 0, "rows": {}, "attachments": {}}
    # composition of one workspace's rows, from its budget
    comp = []
    members_total = 0
    for p in plans:
        b = p.budget
        m = max(2, min(2000, b // 50))
        ch = max(1, min(400, b // 200))
        cv = max(1, b // 25)
        att = max(1, b * 8 // 100)
        pv = att // 2
        rest = b - 1 - m - ch - cv - att - pv
        msgs = max(2, rest * 3 // 4)
        rx = max(1, rest - msgs)
        comp.append(dict(memberships=m, channels=ch, conversations=cv, messages=msgs, attachments=att,
                         attachment_previews=pv, reactions=rx))
        members_total += m
    n_users = max(max(c["memberships"] for c in comp), int(members_total * 0.6))

    with connect(dsn) as conn:
        try:
            conn.execute("SET session_replication_role = replica")
        except psycopg.errors.InsufficientPrivilege:
            conn.rollback()
        # allocate id blocks from every sequence (keeps ids inside the region's range)
        need = {"users": n_users, "workspaces": len(plans)}
        for t in ("channels", "conversations", "messages", "attachments", "attachment_previews", "reactions"):
            need[t] = sum(c[t] for c in comp)
        base: dict[str, int] = {}
        for t in _SEQ_TABLES:
            seq = conn.execute("SELECT pg_get_serial_sequence(%s, 'id')", (t,)).fetchone()[0]
            # nextval then setval: the block [first, first + n) is ours, even with concurrent writers
            first = conn.execute("SELECT nextval(%s::regclass)", (seq,)).fetchone()[0]
            if need[t] > 1:
                conn.execute("SELECT setval(%s::regclass, %s)", (seq, first + need[t] - 1))
            base[t] = first
        out = _generate_and_copy(conn, plans, comp, base, n_users, rng, cat.workspace.prefix_for)
        conn.commit()
    return out


def _copy(conn: psycopg.Connection[Any], table: str, lines: list[str]) -> None:
    stmt = sql.SQL("COPY {} ({}) FROM STDIN").format(
        sql.Identifier(table), sql.SQL(", ").join(sql.Identifier(c) for c in _COLUMNS[table])
    )
    with conn.cursor() as cur, cur.copy(stmt) as cp:
        chunk: list[str] = []
        size = 0
        for ln in lines:
            chunk.append(ln)
            size += len(ln)
            if size > 1 << 20:
                cp.write("\n".join(chunk) + "\n")
                chunk, size = [], 0
        if chunk:
            cp.write("\n".join(chunk) + "\n")


def _generate_and_copy(conn: psycopg.Connection[Any], plans: list[_Plan], comp: list[dict[str, int]],
                       base: dict[str, int], n_users: int, rng: random.Random,
                       prefix_for: Callable[[int], str]) -> dict[str, Any]:
    r = rng.random
    ri = rng.randrange
    names = [_esc(n) for n in _NAMES]
    words = [_esc(w) for w in _WORDS]
    chans = [_esc(c) for c in _CHANNELS]
    emoji = [_esc(e) for e in _EMOJI]
    types = [(_esc(f), c) for f, c in _TYPES]
    uid0 = base["users"]

    # users (global): shared by this region's workspaces through memberships
    users = []
    for i in range(n_users):
        uid = uid0 + i
        nm = names[ri(len(names))] + " " + names[ri(len(names))]
        loc = _LOCALES[ri(len(_LOCALES))]
        prof = _json({"tz": ["UTC", "Europe/Paris", "Asia/Tokyo", "Australia/Sydney"][ri(4)], "bot": r() < 0.02})
        users.append(f"{uid}\tuser{uid}@example.test\t{nm}\t{loc if loc else N}\t{prof}\t{_ts(ri(86400 * 30))}")
    _copy(conn, "users", users)
    del users

    nxt = dict(base)
    ids: list[int] = []
    counts: dict[int, dict[str, int]] = {}
    attachments_of: dict[int, list[tuple[int, str]]] = {}
    lines: dict[str, list[str]] = {t: [] for t in TABLES}

    def flush() -> None:
        # all tables at once, in foreign-key order, so the load is valid even with triggers on
        for t in TABLES:
            if lines[t]:
                _copy(conn, t, lines[t])
                lines[t] = []

    for p, c in zip(plans, comp):
        wid = nxt["workspaces"]
        nxt["workspaces"] += 1
        ids.append(wid)
        t0 = 86400 * (30 + ri(300))
        wname = f"{words[ri(len(words))]} {names[ri(len(names))]} {p.index}"
        lines["workspaces"].append(
            f"{wid}\t{wname}\tws-{wid}\t{_PLANS[0 if p.budget < 200 else (1 if p.index else 2)]}\t"
            f"{_json({'retention_days': 30 + ri(365), 'features': ['threads', 'search'][: 1 + ri(2)], 'locale': 'fr-FR' if r() < 0.2 else 'en-US'})}\t{_ts(t0)}"
        )
        members = sorted(rng.sample(range(n_users), c["memberships"]))
        mem_ids = [uid0 + m for m in members]
        for k, u in enumerate(mem_ids):
            role = "owner" if k == 0 else ("admin" if r() < 0.05 else ("guest" if r() < 0.05 else "member"))
            lines["memberships"].append(f"{wid}\t{u}\t{role}\t{_ts(t0 + k * 60)}")
        ch_ids = []
        for k in range(c["channels"]):
            cid = nxt["channels"]
            nxt["channels"] += 1
            ch_ids.append(cid)
            topic = N if r() < 0.4 else f"{words[ri(len(words))]} {words[ri(len(words))]}"
            tags = "{" + ",".join(f'"{t}"' for t in ["eng", "ops", "fun", "x-team"][: ri(4)]) + "}"
            by = N if r() < 0.1 else str(mem_ids[ri(len(mem_ids))])
            lines["channels"].append(f"{cid}\t{wid}\t{chans[k % len(chans)]}-{k}\t{topic}\t{'t' if r() < 0.2 else 'f'}\t{tags}\t{by}\t{_ts(t0 + k * 3600)}")
        cv_ids = []
        for k in range(c["conversations"]):
            vid = nxt["conversations"]
            nxt["conversations"] += 1
            cv_ids.append(vid)
            dm = r() < 0.3
            ch = N if dm else str(ch_ids[ri(len(ch_ids))])
            subj = N if dm else f"{words[ri(len(words))]} {words[ri(len(words))]}"
            parts = _arr(sorted({mem_ids[ri(len(mem_ids))] for _ in range(2 if dm else 1 + ri(4))}))
            meta = N if r() < 0.5 else _json({"pinned": r() < 0.1, "labels": [words[ri(len(words))]]})
            lines["conversations"].append(f"{vid}\t{wid}\t{ch}\t{subj}\t{parts}\t{meta}\t{_ts(t0 + 7200 + k * 600)}")
        m0 = nxt["messages"]
        nm = c["messages"]
        tmsg = t0 + 86400
        for k in range(nm):
            mid = m0 + k
            author = N if r() < 0.03 else str(mem_ids[ri(len(mem_ids))])
            parent = str(m0 + ri(k)) if (k and r() < 0.1) else N
            body = f"{words[ri(len(words))]} {words[ri(len(words))]} {words[ri(len(words))]} #{k}"
            mentions = _arr([mem_ids[ri(len(mem_ids))]]) if r() < 0.1 else "{}"
            payload = N if r() < 0.8 else _json({"client": ["web", "ios", "android"][ri(3)], "v": ri(9)})
            edited = _ts(tmsg + k * 30 + 90) if r() < 0.05 else N
            lines["messages"].append(
                f"{mid}\t{wid}\t{cv_ids[ri(len(cv_ids))]}\t{author}\t{parent}\t{body}\t{mentions}\t{payload}\t{_ts(tmsg + k * 30)}\t{edited}"
            )
        nxt["messages"] += nm
        prefix = _esc(prefix_for(wid))
        atts: list[tuple[int, str]] = []
        for k in range(c["attachments"]):
            aid = nxt["attachments"]
            nxt["attachments"] += 1
            fname, ctype = types[ri(len(types))]
            key = f"attachments/{aid}"
            atts.append((aid, key))
            lines["attachments"].append(
                f"{aid}\t{m0 + ri(nm)}\t{fname}\t{ctype}\t{1000 + ri(5_000_000)}\t{prefix}{key}\t{rng.getrandbits(256):064x}\t{_ts(tmsg + k * 40)}"
            )
        attachments_of[wid] = atts
        a0 = atts[0][0]
        for k in range(c["attachment_previews"]):
            pid = nxt["attachment_previews"]
            nxt["attachment_previews"] += 1
            data = N if r() < 0.7 else "\\\\x" + rng.getrandbits(64).to_bytes(8, "big").hex()
            lines["attachment_previews"].append(f"{pid}\t{a0 + ri(len(atts))}\t{64 * (1 + ri(8))}\t{48 * (1 + ri(8))}\t{data}")
        for k in range(c["reactions"]):
            xid = nxt["reactions"]
            nxt["reactions"] += 1
            if r() < 0.7:
                st, sid = "message", m0 + ri(nm)
            else:
                st, sid = "conversation", cv_ids[ri(len(cv_ids))]
            who = N if r() < 0.02 else str(mem_ids[ri(len(mem_ids))])
            lines["reactions"].append(f"{xid}\t{st}\t{sid}\t{who}\t{emoji[ri(len(emoji))]}\t{_ts(tmsg + k * 45)}")
        counts[wid] = {"workspaces": 1, **{t: c[t] for t in TABLES if t != "workspaces"}}
        if sum(len(v) for v in lines.values()) > 200_000:
            flush()
    flush()
    return {"ids": ids, "users": n_users, "rows": counts, "attachments": attachments_of}


def _register(control_dsn: str, result: SeedResult) -> None:
    """Directory entries (home region) and one audit entry per workspace, in one transaction."""
    with connect(control_dsn) as conn:
        with conn.transaction():
            for region, wids in result.workspaces.items():
                for wid in wids:
                    directory.register(conn, wid, region)
                    audit.append(conn, "sandbox.seed", f"workspace:{wid}",
                                 {"workspace_id": wid, "region": region, "rows": result.rows_of(wid), "seed": result.seed})


def _put_objects(cat: Catalogue, conns: Connections, result: SeedResult, seed_value: int,
                 loaded: list[tuple[str, dict[str, Any]]]) -> None:
    """A few objects (1-4 KB) per workspace under its prefix: attachments and one export. Each is
    also written to the bucket's replica in the backup region, as S3 replication would (moto
    keeps the replication configuration but copies nothing)."""
    jobs: list[tuple[Any, str, str, bytes]] = []
    clients = {r: s3_client(conns.region(r)) for r, _ in loaded}
    replicas = {r: s3_client(conns.region(r), conns.region(r).backup_aws_region) for r, _ in loaded}
    for region, out in loaded:
        buckets = cat.region(region).environment.buckets
        ep = conns.region(region)
        for wid in out["ids"]:
            rng = random.Random(f"{seed_value}:objects:{wid}")
            prefix = cat.workspace.prefix_for(wid)
            n = 5 if wid == result.biggest else 1 + rng.randrange(3)
            keys = []
            if buckets:
                for aid, key in out["attachments"][wid][:n]:
                    keys.append((buckets[0], prefix + key))
                if len(buckets) > 1:
                    keys.append((buckets[1], prefix + f"exports/export-{wid}.json"))
            for logical, key in keys:
                body = rng.randbytes(1024 + rng.randrange(3 * 1024))
                jobs.append((clients[region], ep.bucket(logical), key, body))
                jobs.append((replicas[region], ep.replica_bucket(logical), key, body))
                result.objects.setdefault(wid, []).append((ep.bucket(logical), key))

    def put(job: tuple[Any, str, str, bytes]) -> None:
        client, bucket, key, body = job
        client.put_object(Bucket=bucket, Key=key, Body=body,
                                   Metadata={"sha256": hashlib.sha256(body).hexdigest()})

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(put, jobs))


def table_checksums(dsn: str, tables: Iterable[str] = ("users", *TABLES)) -> dict[str, tuple[int, str]]:
    """(row count, md5 of all rows in id order) per table: equal data gives equal checksums."""
    out: dict[str, tuple[int, str]] = {}
    with connect(dsn) as conn:
        for t in tables:
            order = sql.SQL("workspace_id, user_id") if t == "memberships" else sql.SQL("id")
            q = sql.SQL("SELECT count(*), coalesce(md5(string_agg(t::text, E'\\n' ORDER BY {})), '') FROM {} t").format(
                order, sql.Identifier(t))
            n, h = conn.execute(q).fetchone()
            out[t] = (n, h)
    return out
