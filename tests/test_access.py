"""Operator access (issue 13) on real servers, managed as production's non-superuser role would
(``residency_mover``: CREATEROLE, SET on log_statement, pg_signal_backend, member of the app's
owner). Each test connects as the operator with psycopg and tries, as a support engineer would.

The README walkthrough -- a support engineer reads one workspace's messages for 1 hour after the
customer consents -- is :func:`test_walkthrough_reads_one_workspaces_messages_after_consent`.
"""

from __future__ import annotations

import time
from dataclasses import replace

import psycopg
import pytest
from click.testing import CliRunner
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from move_support import connections_env
from request_helpers import REPO
from residency import audit, grants
from residency.access import lifecycle
from residency.audit import Actor
from residency.cli import main
from residency.errors import InputError, OperationError

US_OP = "ann@us.support.example.com"
EU_OP = "eve@eu.support.example.com"
WHO = Actor("ann@us.support.example.com", "test")


def _as(dsn: str, user: str) -> str:
    d = conninfo_to_dict(dsn)
    d["user"] = user
    return make_conninfo(**d)


class World:
    def __init__(self, env):
        self.env = env
        self.seed = env.seed(workspaces=4, rows=400, seed=13)
        self.ws, self.other = sorted(self.seed.workspaces["us"])[:2]
        self.manager = {r: env.grant_role(r) for r in ("us", "eu", "au")}  # residency_mover, not a superuser
        self.conns = env.connections_as(self.manager)

    def cp(self, login: str) -> psycopg.Connection:
        return psycopg.connect(_as(self.env.control_dsn, login), autocommit=True)

    def token(self, grant_id: int) -> str:
        """What the customer receives: the notice's consent token (read as the delivery would)."""
        with psycopg.connect(self.env.control_dsn, autocommit=True) as c:
            (payload,) = c.execute("SELECT payload FROM residency.notices WHERE event = 'access.consent_requested'"
                                   " AND (payload->>'access_id')::bigint = %s", (grant_id,)).fetchone()
        return payload["consent_token"]

    def grant(self, scope="all", *, write=False, duration="1h", ws=None):
        with self.cp("sandbox_requester") as c:
            r = lifecycle.request(c, self.env.catalogue, self.conns, ws or self.ws, US_OP, scope, duration=duration,
                                  reason="ticket 4711", write=write, actor=WHO)
        with self.cp("sandbox_approver") as c:
            g = lifecycle.approve(c, self.env.catalogue, self.conns, r.grant.id, actor=Actor("customer-admin", "test"))
        with self.cp("sandbox_requester") as c:
            pw = lifecycle.password(c, self.conns, g.id, actor=WHO)
        return g, r.dsn, pw

    def app(self, sql_text: str, params=(), region: str = "us"):
        with psycopg.connect(self.env.dsn(region), autocommit=True) as c:
            return c.execute(sql_text, params).fetchall()


def _operator(dsn: str, password: str) -> psycopg.Connection:
    return psycopg.connect(dsn, password=password, autocommit=True, connect_timeout=5)


@pytest.fixture
def world(env):
    w = World(env)
    yield w
    with psycopg.connect(env.control_dsn, autocommit=True) as c:  # leave no login role on the shared servers
        for g in grants.list_grants(c):
            if g.state in grants.LIVE:
                grants.end(c, w.conns.region(g.region).dsn, g, "revoked", "test over")


def test_walkthrough_reads_one_workspaces_messages_after_consent(world):
    """README: request → the customer redeems the token → password → psql as the operator."""
    with world.cp("sandbox_requester") as c:
        r = lifecycle.request(c, world.env.catalogue, world.conns, world.ws, US_OP, "messages,users", duration="1h",
                              reason="ticket 4711: messages missing", actor=WHO)
    assert r.grant.state == "pending" and "password" not in r.dsn and r.grant.role_name in r.dsn
    token = world.token(r.grant.id)
    with world.cp("sandbox_requester") as c:  # the role that asked cannot consent, even holding the token
        with pytest.raises(OperationError, match="only the customer's side"):
            lifecycle.consent(c, world.env.catalogue, world.conns, token)
    with world.cp("sandbox_approver") as c:  # the customer's side redeems it
        g = lifecycle.consent(c, world.env.catalogue, world.conns, token, actor=Actor("customer@acme.example", "portal"))
    assert g.state == "granted" and g.consent["via"] == "token" and g.consent["by"] == "sandbox_approver"
    assert g.consent["scope"] == ["messages", "users"] and g.consent["duration_seconds"] == 3600
    with world.cp("sandbox_approver") as c, pytest.raises(InputError, match="already used"):
        lifecycle.consent(c, world.env.catalogue, world.conns, token)
    with world.cp("sandbox_approver") as c, pytest.raises(OperationError, match="role that asked"):
        lifecycle.password(c, world.conns, g.id)
    with world.cp("sandbox_requester") as c:
        pw = lifecycle.password(c, world.conns, g.id)
    mine = world.app("SELECT id, body FROM messages WHERE workspace_id = %s ORDER BY id", (world.ws,))
    with _operator(r.dsn, pw) as op:
        assert op.execute("SELECT id, body FROM messages ORDER BY id").fetchall() == mine and mine
        assert op.execute("SHOW log_statement").fetchone()[0] == "all"
        op.execute("SELECT count(*) FROM messages WHERE body LIKE 'ticket-4711-probe%'")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            op.execute("SET log_statement = 'none'")
        with pytest.raises(psycopg.errors.UndefinedTable):  # out of scope: not even a view of it
            op.execute("SELECT * FROM channels")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):  # the application's table itself
            op.execute("SELECT * FROM public.messages")
    # every statement of the operator is in the region server's log, under its role
    from residency.sandbox.core import read_state

    log = open(read_state(world.env.sandbox.home)["regions"]["us"]["log"], errors="replace").read()
    assert any(g.role_name in line and "statement: SELECT count(*) FROM messages WHERE body LIKE 'ticket-4711-probe%'" in line
               for line in log.splitlines())
    assert pw not in log and token not in log
    with psycopg.connect(world.env.control_dsn, autocommit=True) as c:
        actions = [e.action for e in audit.entries(c, f"access/{g.id}")]
        assert actions == ["access.requested", "access.consented", "access.granted", "access.password_issued"]
        assert audit.verify(c).ok
        assert not c.execute("SELECT count(*) FROM residency.audit WHERE details::text LIKE %s", (f"%{pw}%",)).fetchone()[0]
        assert not c.execute("SELECT count(*) FROM residency.audit WHERE details::text LIKE %s", (f"%{token}%",)).fetchone()[0]


def test_reads_exactly_the_workspaces_rows_joins_fk_only_tables_and_referenced_globals(world):
    g, dsn, pw = world.grant("all")
    ws = world.ws
    # a user only another workspace knows, and one nobody does
    (stranger,) = world.app("INSERT INTO users (email, display_name) VALUES ('s@other.example', 'S') RETURNING id")[0]
    world.app("INSERT INTO memberships (workspace_id, user_id, role, joined_at) VALUES (%s, %s, 'member', now()) RETURNING 1",
              (world.other, stranger))
    (nobody,) = world.app("INSERT INTO users (email, display_name) VALUES ('n@nowhere.example', 'N') RETURNING id")[0]
    with _operator(dsn, pw) as op:
        assert op.execute("SELECT count(*) FROM messages WHERE workspace_id <> %s", (ws,)).fetchone()[0] == 0
        for table in ("messages", "channels", "memberships"):
            assert op.execute(f"SELECT count(*) FROM {table}").fetchone()[0] == world.app(
                f"SELECT count(*) FROM {table} WHERE workspace_id = %s", (ws,))[0][0]
        # reached only by foreign key: attachments -> messages
        theirs = world.app("SELECT a.id FROM attachments a JOIN messages m ON m.id = a.message_id WHERE m.workspace_id = %s ORDER BY 1", (ws,))
        assert op.execute("SELECT id FROM attachments ORDER BY 1").fetchall() == theirs
        other = world.app("SELECT a.id FROM attachments a JOIN messages m ON m.id = a.message_id WHERE m.workspace_id = %s", (world.other,))
        assert other and not set(other) & set(op.execute("SELECT id FROM attachments").fetchall())
        # a join across views stays inside the workspace
        joined = op.execute("SELECT count(*), count(DISTINCT c.workspace_id) FROM messages m"
                            " JOIN conversations c ON c.id = m.conversation_id").fetchone()
        assert joined[0] == op.execute("SELECT count(*) FROM messages").fetchone()[0] > 0 and joined[1] == 1
        # global rows: exactly the users this workspace's rows point at
        users = {u for (u,) in op.execute("SELECT id FROM users")}
        referenced = {u for (u,) in world.app(
            "SELECT user_id FROM memberships WHERE workspace_id = %(ws)s UNION SELECT author_id FROM messages WHERE workspace_id = %(ws)s"
            " UNION SELECT created_by FROM channels WHERE workspace_id = %(ws)s UNION SELECT r.user_id FROM reactions r WHERE"
            " (r.subject_type = 'message' AND r.subject_id IN (SELECT id FROM messages WHERE workspace_id = %(ws)s)) OR"
            " (r.subject_type = 'conversation' AND r.subject_id IN (SELECT id FROM conversations WHERE workspace_id = %(ws)s))",
            {"ws": ws}) if u is not None}
        assert users == referenced and stranger not in users and nobody not in users
        # polymorphic reach: reactions on the workspace's messages and conversations only
        n = op.execute("SELECT count(*) FROM reactions").fetchone()[0]
        assert n == world.app("SELECT count(*) FROM reactions r WHERE (r.subject_type = 'message' AND r.subject_id IN"
                              " (SELECT id FROM messages WHERE workspace_id = %s)) OR (r.subject_type = 'conversation' AND"
                              " r.subject_id IN (SELECT id FROM conversations WHERE workspace_id = %s))", (ws, ws))[0][0]
        # read-only unless write was consented
        assert op.execute("SHOW default_transaction_read_only").fetchone()[0] == "on"
        op.execute("SET default_transaction_read_only = off")  # the setting is only a hint: privileges decide
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            op.execute("UPDATE messages SET body = 'x'")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            op.execute("DELETE FROM channels")


def test_write_only_when_consented_and_only_inside_the_workspace(world):
    g, dsn, pw = world.grant("messages,users", write=True)
    (mid,) = world.app("SELECT min(id) FROM messages WHERE workspace_id = %s", (world.ws,))[0]
    with _operator(dsn, pw) as op:
        assert op.execute("UPDATE messages SET body = 'fixed by support' WHERE id = %s", (mid,)).rowcount == 1
        (other_id,) = world.app("SELECT min(id) FROM messages WHERE workspace_id = %s", (world.other,))[0]
        assert op.execute("UPDATE messages SET body = 'x' WHERE id = %s", (other_id,)).rowcount == 0  # invisible
        with pytest.raises(psycopg.errors.WithCheckOptionViolation):  # can't push a row out of the workspace
            op.execute("UPDATE messages SET workspace_id = %s WHERE id = %s", (world.other, mid))
        with pytest.raises(psycopg.errors.InsufficientPrivilege):  # global rows stay read-only
            op.execute("UPDATE users SET display_name = 'x'")
    assert world.app("SELECT body FROM messages WHERE id = %s", (mid,)) == [("fixed by support",)]


def test_no_login_after_expiry_or_revocation_and_the_sweep_drops_it(world):
    g, dsn, pw = world.grant("messages", duration="3s")
    with _operator(dsn, pw) as op:
        assert op.execute("SELECT count(*) FROM messages").fetchone()[0] > 0
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            _operator(dsn, pw).close()
        except psycopg.OperationalError as exc:
            assert "password authentication failed" in str(exc)
            break
        time.sleep(0.5)
    else:
        pytest.fail("the operator could still log in after VALID UNTIL")
    with world.cp("sandbox_operator") as c:
        ended = lifecycle.sweep_expired(c, world.conns)
    assert [(e.id, e.state) for e in ended] == [(g.id, "expired")]
    assert not world.app("SELECT 1 FROM pg_roles WHERE rolname = %s", (g.role_name,))
    assert not world.app("SELECT 1 FROM pg_namespace WHERE nspname = %s", (g.role_name,))

    g2, dsn2, pw2 = world.grant("messages")
    session = _operator(dsn2, pw2)
    with world.cp("sandbox_approver") as c:  # the customer's side withdraws its consent
        assert lifecycle.revoke(c, world.conns, g2.id).state == "revoked"
    with pytest.raises(psycopg.OperationalError):  # the open session was ended ...
        session.execute("SELECT 1")
    with pytest.raises(psycopg.OperationalError):  # ... and no new one starts
        _operator(dsn2, pw2)


def test_the_grant_exists_only_in_the_home_region(world):
    g, dsn, pw = world.grant("all")
    assert world.app("SELECT 1 FROM pg_roles WHERE rolname = %s", (g.role_name,), region="us")
    for region in ("eu", "au"):
        assert not world.app("SELECT 1 FROM pg_roles WHERE rolname = %s", (g.role_name,), region=region)
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(_as(world.env.dsn(region), g.role_name), password=pw, connect_timeout=5).close()


def test_a_move_ends_the_grant(world, tmp_path):
    from residency import evidence
    from residency.migrate import evidence as pack_of, start_move

    g, dsn, pw = world.grant("all")
    ops = replace(world.conns, control_dsn=_as(world.env.control_dsn, "sandbox_operator"))
    rec = start_move(world.env.catalogue, ops, world.ws, "eu", strategy="snapshot")
    assert rec.state == "cut_over"
    with pytest.raises(psycopg.OperationalError):
        _operator(dsn, pw)
    assert not world.app("SELECT 1 FROM pg_roles WHERE rolname = %s", (g.role_name,))
    with psycopg.connect(world.env.control_dsn, autocommit=True) as c:
        assert grants.get(c, g.id).state == "ended"
        ended = [e for e in audit.entries(c, f"move/{rec.id}") if e.action == "move.access_ended"]
        assert ended and ended[0].details["grants"][0]["access_id"] == g.id
        assert ended[0].details["grants"][0]["consent"]["by"] == "sandbox_approver"
    # the move's evidence pack carries the ended grant and its consent, signed with the rest
    out = pack_of.write(world.conns, rec.id, tmp_path / "pack")
    data = (tmp_path / "pack").read_bytes()
    assert out["entries"] and evidence.verify(data).ok
    entry = next(e for e in __import__("json").loads(data)["audit_entries"] if e["action"] == "move.access_ended")
    assert entry["details"]["grants"][0]["consent"]["via"] == "approval"


def test_the_applications_role_sees_and_writes_exactly_what_it_did_before(world):
    app = world.env.grant_role("us", f"app_{world.env.token}")  # a role of the application, member of its owner

    def snapshot():
        with psycopg.connect(app, autocommit=True) as c:
            counts = {t: c.execute(f"SELECT count(*), sum(hashtext(x::text)) FROM {t} x").fetchone()
                      for t in ("messages", "attachments", "users", "reactions", "channels")}
            acl = c.execute("SELECT relname, relacl::text, relrowsecurity, relforcerowsecurity FROM pg_class c"
                            " JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'public' AND relkind = 'r' ORDER BY 1").fetchall()
            return counts, acl

    def write(tag):
        with psycopg.connect(app, autocommit=True) as c:
            c.execute("UPDATE messages SET body = %s WHERE id = (SELECT min(id) FROM messages WHERE workspace_id = %s)", (tag, world.other))
            return c.execute("SELECT body FROM messages WHERE id = (SELECT min(id) FROM messages WHERE workspace_id = %s)", (world.other,)).fetchone()

    before = snapshot()
    assert write("before") == ("before",)
    g, dsn, pw = world.grant("all", write=True)
    assert write("during") == ("during",)
    during = snapshot()
    assert during[1] == before[1] and not any(r[2] or r[3] for r in during[1])  # no grant, no row-level security
    assert {t: v[0] for t, v in during[0].items()} == {t: v[0] for t, v in before[0].items()}
    with world.cp("sandbox_requester") as c:
        lifecycle.revoke(c, world.conns, g.id)
    assert snapshot()[1] == before[1]


def test_policy_refuses_an_operator_outside_the_jurisdiction(world):
    eu_ws = sorted(world.seed.workspaces["eu"])[0]
    with world.cp("sandbox_requester") as c:
        with pytest.raises(lifecycle.Refused, match="may access US, AU, not region 'eu' in jurisdiction EU"):
            lifecycle.request(c, world.env.catalogue, world.conns, eu_ws, US_OP, "all", duration="1h", reason="r")
        refused = grants.list_grants(c)[0]
        assert refused.state == "refused" and refused.token_sha256 is None
        assert [e.action for e in audit.entries(c, refused.subject)] == ["access.refused"]
        assert not c.execute("SELECT count(*) FROM residency.notices WHERE event = 'access.consent_requested'").fetchone()[0]
        ok = lifecycle.request(c, world.env.catalogue, world.conns, eu_ws, EU_OP, "all", duration="1h", reason="r")
        assert ok.grant.state == "pending"


def test_an_expired_consent_token_is_refused(world):
    with world.cp("sandbox_requester") as c:
        r = lifecycle.request(c, world.env.catalogue, world.conns, world.ws, US_OP, "messages", duration="1h", reason="r")
    token = world.token(r.grant.id)
    with psycopg.connect(world.env.control_dsn, autocommit=True) as c:  # the token's 24 hours have passed
        c.execute("UPDATE residency.access_grants SET token_expires_at = now() - interval '1 minute' WHERE id = %s", (r.grant.id,))
    with world.cp("sandbox_approver") as c:
        with pytest.raises(OperationError, match="consent token of access .* expired"):
            lifecycle.consent(c, world.env.catalogue, world.conns, token)
    with world.cp("sandbox_operator") as c:
        ended = lifecycle.sweep_expired(c, world.conns)
    assert [(e.id, e.state) for e in ended] == [(r.grant.id, "cancelled")]


def _cli(env, monkeypatch, login, *args):
    for k, v in connections_env(env).items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("RESIDENCY_CONTROL_DSN", _as(env.control_dsn, login))
    return CliRunner().invoke(main, ["--regions", str(REPO / "regions.yaml"), *args])


@pytest.mark.parametrize("args, says", [
    (["request", "{ws}", "--operator", "ann", "--scope", "all", "--for", "1h", "--reason", "r"], "not an email address"),
    (["request", "{ws}", "--operator", US_OP, "--scope", "messages;drop", "--for", "1h", "--reason", "r"], "--scope"),
    (["request", "{ws}", "--operator", US_OP, "--scope", "nosuchtable", "--for", "1h", "--reason", "r"], "unknown table nosuchtable"),
    (["request", "{ws}", "--operator", US_OP, "--scope", "all", "--for", "9h", "--reason", "r"], "longer than operator_access.max_duration"),
    (["request", "{ws}", "--operator", US_OP, "--scope", "all", "--for", "soon", "--reason", "r"], "--for 'soon' is not understood"),
    (["request", "x1", "--operator", US_OP, "--scope", "all", "--for", "1h", "--reason", "r"], "x1"),
    (["show", "abc"], "access id 'abc' is not a number"),
    (["consent", "not-a-token"], "unknown consent token"),
])
def test_bad_input_is_one_line(world, monkeypatch, args, says):
    r = _cli(world.env, monkeypatch, "sandbox_requester", "access", *[a.replace("{ws}", str(world.ws)) for a in args])
    assert r.exit_code == 2, (r.output, r.exception)
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and says in lines[0], r.stderr


def test_cli_request_approve_list_show_revoke(world, monkeypatch):
    r = _cli(world.env, monkeypatch, "sandbox_requester", "access", "request", str(world.ws), "--operator", US_OP,
             "--scope", "messages", "--for", "1h", "--reason", "ticket 4711")
    assert r.exit_code == 0, r.output
    assert "connect with: psql 'postgresql://residency_access_" in r.stdout and "residency access password 1" in r.stdout
    assert _cli(world.env, monkeypatch, "sandbox_requester", "access", "approve", "1").exit_code == 1  # not an approver
    r = _cli(world.env, monkeypatch, "sandbox_approver", "access", "approve", "1")
    assert r.exit_code == 0 and "access 1 granted" in r.stdout, r.output
    r = _cli(world.env, monkeypatch, "sandbox_requester", "access", "list", "--active", "--json")
    assert r.exit_code == 0 and [g["id"] for g in __import__("json").loads(r.stdout)] == [1]
    r = _cli(world.env, monkeypatch, "sandbox_requester", "access", "password", "1")
    assert r.exit_code == 0
    secret = r.stdout.strip()
    dsn = __import__("json").loads(_cli(world.env, monkeypatch, "sandbox_requester", "access", "show", "1", "--json").stdout)
    with _operator(lifecycle.dsn_for(world.env.dsn("us"), dsn["role_name"]), secret) as op:
        assert op.execute("SELECT count(DISTINCT workspace_id) FROM messages").fetchone()[0] == 1
    r = _cli(world.env, monkeypatch, "sandbox_operator", "access", "sweep")
    assert r.exit_code == 0 and r.stdout.strip() == "0 accesses ended"  # not expired yet
    r = _cli(world.env, monkeypatch, "sandbox_requester", "access", "show", "1")
    assert "consent       sandbox_approver via approval" in r.stdout and "access.granted" in r.stdout
    r = _cli(world.env, monkeypatch, "sandbox_requester", "access", "revoke", "1")
    assert r.exit_code == 0 and "access 1 revoked" in r.stdout
    r = _cli(world.env, monkeypatch, "sandbox_requester", "access", "list", "--active", "--json")
    assert r.stdout.strip() == "[]"


def test_a_rails_style_app_owned_polymorphic_and_shared_rows(env, monkeypatch):
    """The Rails-style schema of tests/test_real_app_rails.py: ActiveStorage blobs owned through
    attachments, polymorphic taggings and attachments, bots shared through a NULL key."""
    from move_support import load_app
    from test_real_app_rails import DDL, WORKSPACE, _fill, _q, _tenant

    cat = replace(load_app(env, monkeypatch, "rails", DDL, WORKSPACE, {"1": "us", "2": "us", "3": "eu"}),
                  operator_access=env.catalogue.operator_access)
    _fill(env.dsn("us"), [1, 2], 1_000_000, ("churn-risk", "vip"))
    conns = env.connections_as({"us": env.grant_role("us")})
    with psycopg.connect(_as(env.control_dsn, "sandbox_requester"), autocommit=True) as c:
        r = lifecycle.request(c, cat, conns, "1", US_OP, "all", duration="1h", reason="ticket 9")
    with psycopg.connect(_as(env.control_dsn, "sandbox_approver"), autocommit=True) as c:
        g = lifecycle.approve(c, cat, conns, r.grant.id)
    with psycopg.connect(_as(env.control_dsn, "sandbox_requester"), autocommit=True) as c:
        pw = lifecycle.password(c, conns, g.id)
    expected = _tenant(env.dsn("us"), 1)
    try:
        with _operator(r.dsn, pw) as op:
            one = lambda q: op.execute(q).fetchone()[0]  # noqa: E731
            assert one("SELECT count(*) FROM conversations") == expected["conversations"]
            assert one("SELECT count(*) FROM messages") == expected["messages"]
            assert one("SELECT count(*) FROM taggings") == expected["taggings"]
            assert one("SELECT count(*) FROM portals_members") == expected["portals_members"]  # no primary key, FK only
            assert one("SELECT count(*) FROM active_storage_attachments WHERE record_type = 'Message'") == expected["attachments"]
            # owned blobs, plus the shared avatar's blob the workspace's messages reach through a user
            assert one("SELECT count(*) FROM active_storage_blobs") == expected["blobs"] + 1
            bots = {name for (name,) in op.execute("SELECT name FROM agent_bots")}
            assert bots == {"own bot", "shared helper"} and one("SELECT count(*) FROM agent_bots") == 2  # not account 2's
            assert one("SELECT count(DISTINCT account_id) FROM messages") == 1
            assert {t for (t,) in op.execute("SELECT name FROM tags")} <= {"churn-risk", "vip"}
        assert _q(env.dsn("us"), "SELECT count(*) FROM messages WHERE account_id = 2")[0][0] > 0
    finally:
        with psycopg.connect(env.control_dsn, autocommit=True) as c:
            lifecycle.revoke(c, conns, g.id)


@pytest.mark.parametrize("section, problem", [
    ('  operators:\n    "*@x.example": {based_in: EX}\n', "regions.yaml:{line}:31: operator_access.operators.'*@x.example': jurisdiction 'EX' is not defined (defined: AU, EU, US); did you mean EU?"),
    ('  operators:\n    "support": {based_in: EU}\n', "regions.yaml:{line}:5: operator_access.operators.'support': an operator is an email pattern such as '*@eu.support.example.com'"),
    ('  max_duration: 9d\n  operators:\n    "*@x.example": {based_in: EU}\n', "regions.yaml:{dur}:17: operator_access: max_duration 9d is too long; at most 7d"),
    ('  operators:\n    "*@x.example": {based_in: EU, may_see: [US]}\n', "regions.yaml:{line}:35: operator_access.operators.'*@x.example': unknown key 'may_see'; allowed: based_in, may_access"),
])
def test_the_operator_access_section_is_validated_line_exact(section, problem):
    from residency import catalogue
    from residency.errors import CatalogueError

    text = (REPO / "regions.yaml").read_text()
    head = text[: text.index("operator_access:")]  # the section is the file's last
    body = head + "operator_access:\n" + section
    first = head.count("\n") + 1
    with pytest.raises(CatalogueError) as exc:
        catalogue.loads(body, "regions.yaml")
    assert exc.value.problems == [problem.format(line=first + section.count("\n"), dur=first + 1)]
