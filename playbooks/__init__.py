"""Playbooks: Jinja2 runbooks and customer notices rendered from regions.yaml and a move's record.

``render(name, *, cat, region=None, move=None, request=None, format='md'|'html')``:

- ``new-region`` (``region=``): every step to stand up a region, each with its command; with
  ``checks=`` (from :func:`check_new_region`) each checkable step shows its result.
- ``workspace-move`` (``move=`` or ``request=``): the operator's runbook for one move, filled from
  its plan: sizes, strategy, estimated duration and fence, the rollback command.
- ``move-scheduled``, ``move-completed`` (with the verification summary), ``source-deleted``
  (with the deletion record): what the customer receives.

Templates live in ``playbooks/templates`` and are rendered with ``StrictUndefined``: a missing
variable fails loudly (:class:`PlaybookError`) instead of leaving a gap in a runbook someone
follows at 2 a.m. HTML is the same Markdown converted by a small, escaping converter.
"""

from __future__ import annotations

import html
import re
from dataclasses import asdict, dataclass, field, is_dataclass
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path
from typing import Any, Mapping

import jinja2

from residency.errors import InputError, first_line
from residency.units import format_bytes, format_duration

TEMPLATES = Path(__file__).with_name("templates")
PLAYBOOKS = ("new-region", "workspace-move", "move-scheduled", "move-completed", "source-deleted")
FORMATS = ("md", "html")

# AWS regions that are disabled in an account until someone opts in (launched after March 2019).
OPT_IN_REGIONS = frozenset({
    "af-south-1", "ap-east-1", "ap-east-2", "ap-south-2", "ap-southeast-3", "ap-southeast-4", "ap-southeast-5",
    "ap-southeast-6", "ap-southeast-7", "ca-west-1", "eu-central-2", "eu-south-1", "eu-south-2", "il-central-1",
    "me-central-1", "me-south-1", "mx-central-1",
})


class PlaybookError(InputError):
    """A playbook could not be rendered (unknown name, missing variable, move not in that state)."""


@lru_cache(maxsize=1)
def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES)),
        undefined=jinja2.StrictUndefined,
        autoescape=False,  # Markdown/text; HTML output is escaped by to_html
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["bytes"] = format_bytes
    env.filters["duration"] = format_duration
    env.filters["thousands"] = lambda n: f"{int(n):,}"
    return env


# --------------------------------------------------------------------------- contexts


def _plain(v: Any) -> Any:
    if is_dataclass(v) and not isinstance(v, type):
        return _plain(asdict(v))
    if isinstance(v, Mapping):
        return {str(k): _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if isinstance(v, datetime):
        return v.astimezone(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")
    return v


def region_context(cat: Any, name: str) -> dict[str, Any]:
    from residency import policy

    r = cat.region(name)
    j = cat.jurisdictions[r.jurisdiction]
    env = r.environment
    others = [o.name for o in cat.regions.values() if o.name != r.name and o.status == "active"]
    return {
        "name": r.name,
        "aws_region": r.aws_region,
        "jurisdiction": r.jurisdiction,
        "law": j.law or "",
        "jurisdiction_aws_regions": list(j.aws_regions),
        "backup_region": r.backup_region,
        "cidr": r.cidr,
        "status": r.status,
        "opt_in": r.aws_region in OPT_IN_REGIONS,
        "backup_opt_in": r.backup_region in OPT_IN_REGIONS,
        "database": _plain(env.database),
        "buckets": list(env.buckets),
        "queues": list(env.queues),
        "retention": _plain(env.retention),
        "overrides": _plain(r.overrides),
        "stack_may_touch": list(policy.allowed_aws_regions(cat, r.name)),
        "other_active": others,
        "smoke_source": others[0] if others else "",
    }


def move_context(cat: Any, move: Any = None, request: Any = None, throughput: Any = None) -> dict[str, Any]:
    """What the move playbooks and notices need, from a MoveRecord and/or a Request (or dicts)."""
    from residency import estimates as rq
    from residency.estimates import plan_sizes
    from residency.windows import Window

    if move is None and request is None:
        raise PlaybookError("a move or a request is needed (--move ID or --request ID)")
    m = _plain(move) if move is not None else {}
    r = _plain(request) if request is not None else {}
    base = m or r
    ws, source, target = base["workspace_id"], base["source"], base["target"]
    strategy = base.get("strategy") or "snapshot"
    sizes = plan_sizes(m.get("plan")) if m.get("plan") else {}
    if not sizes.get("tables") and r.get("estimate"):
        sizes = {k: r["estimate"].get(k, 0) for k in ("rows", "bytes", "objects", "object_bytes")}
        sizes["tables"] = r["estimate"].get("tables", {})
    est = rq.estimate(sizes or {}, strategy, throughput)
    window = None
    if r:
        window = {"text": str(Window(request.window_start, request.window_end)) if not isinstance(request, Mapping) else r.get("window", ""),
                  "start": r.get("window_start"), "end": r.get("window_end")}
    report = m.get("report") or {}
    return {
        "workspace_id": ws,
        "source": region_context(cat, source) if source in cat.regions else {"name": source, "jurisdiction": "?", "law": ""},
        "target": region_context(cat, target),
        "strategy": strategy,
        "move": {"id": m.get("id"), "state": m.get("state"), "error": m.get("error"), "created_at": m.get("created_at")} if m else None,
        "request": {"id": r.get("id"), "requested_by": r.get("requested_by"), "reason": r.get("reason") or "",
                    "approved_by": r.get("approved_by"), "state": r.get("state")} if r else None,
        "window": window,
        "sizes": {
            "tables": [{"name": k, "rows": v.get("rows", 0), "bytes": v.get("bytes", 0)} for k, v in (sizes.get("tables") or {}).items()],
            "rows": est["rows"], "bytes": est["bytes"], "objects": est["objects"], "object_bytes": est["object_bytes"],
        },
        "estimate": {"seconds": est["seconds"], "fence_seconds": est["fence_seconds"], "throughput": est["throughput_bytes_per_second"]},
        "report": report,
    }


def verification_context(move_ctx: dict[str, Any]) -> dict[str, Any]:
    m = move_ctx["move"]
    rep = move_ctx["report"]
    if not m or m["state"] not in ("cut_over", "cleaned"):
        raise PlaybookError(f"move {m and m['id']} is {m and m['state']}: it has not completed, there is nothing to report yet")
    v = rep.get("verify") or {}
    if not v:
        raise PlaybookError(f"move {m['id']} has no verification record")
    tables = [t for t in v.get("tables", []) if t.get("kind", "table") == "table"]
    objs = (v.get("objects") or {}).get("buckets") or {}
    return {
        "ok": bool(v.get("ok")),
        "tables": [{"name": t["table"], "rows": t["target_rows"], "checksum": t["target_checksum"], "ok": t["ok"]} for t in tables],
        "rows": sum(int(t["target_rows"]) for t in tables),
        "objects": sum(int((b or {}).get("objects", (b or {}).get("count", 0)) or 0) for b in objs.values()) if isinstance(objs, Mapping) else 0,
        "objects_ok": bool((v.get("objects") or {}).get("ok", True)),
        "cut_over_at": (rep.get("cut_over") or {}).get("at", ""),
        "fence_seconds": (rep.get("fence") or {}).get("seconds"),
    }


def deletion_context(move_ctx: dict[str, Any]) -> dict[str, Any]:
    m = move_ctx["move"]
    d = move_ctx["report"].get("deletion")
    if not m or not d:
        raise PlaybookError(f"move {m and m['id']} ({m and m['state']}) has no deletion record: the source copy has not been deleted")
    return {
        "deleted_at": d["deleted_at"],
        "region": d["region"],
        "grace": d.get("grace", ""),
        "rows": d["rows"],
        "object_count": d["object_count"],
        "tables": [{"name": k, "rows": v["rows"], "checksum": v["checksum"]} for k, v in d["tables"].items()],
        "objects": [{"bucket": k, "objects": v.get("objects", 0), "bytes": v.get("bytes", 0)} for k, v in (d.get("objects") or {}).items()],
    }


# --------------------------------------------------------------------------- rendering


def render_template(name: str, context: Mapping[str, Any], format: str = "md") -> str:
    """Render ``templates/<name>.md.j2``; a missing variable raises PlaybookError naming it."""
    if name not in PLAYBOOKS:
        raise PlaybookError(f"unknown playbook '{name}' (playbooks: {', '.join(PLAYBOOKS)})")
    if format not in FORMATS:
        raise PlaybookError(f"unknown format '{format}' (formats: {', '.join(FORMATS)})")
    try:
        text = environment().get_template(f"{name}.md.j2").render(**context)
    except jinja2.UndefinedError as exc:
        raise PlaybookError(f"playbook '{name}': {exc.message}") from exc
    text = re.sub(r"\n{3,}", "\n\n", text)
    return to_html(text, title=text.lstrip("# ").splitlines()[0] if text.strip() else name) if format == "html" else text


def render(
    name: str,
    *,
    cat: Any = None,
    region: str | None = None,
    move: Any = None,
    request: Any = None,
    format: str = "md",
    checks: Any = None,
    throughput: Any = None,
) -> str:
    """Render a playbook from the catalogue and a region or a move/request (see module doc)."""
    if cat is None:
        from residency import catalogue

        cat = catalogue.load(catalogue.default_path())
    now = datetime.now(timezone.utc).isoformat(timespec="minutes").replace("+00:00", "Z")
    if name == "new-region":
        if not region:
            raise PlaybookError("playbook 'new-region' needs --region")
        ctx: dict[str, Any] = {"region": region_context(cat, region), "checks": _plain(checks) if checks is not None else None, "generated_at": now}
        return render_template(name, ctx, format)
    if name not in PLAYBOOKS:
        raise PlaybookError(f"unknown playbook '{name}' (playbooks: {', '.join(PLAYBOOKS)})")
    mc = move_context(cat, move, request, throughput)
    mc["generated_at"] = now
    if name == "move-completed":
        mc["verification"] = verification_context(mc)
    if name == "source-deleted":
        mc["deletion"] = deletion_context(mc)
    return render_template(name, mc, format)


# --------------------------------------------------------------------------- Markdown → HTML (the subset the templates use)

_INLINE_CODE = re.compile(r"`([^`]+)`")
_BOLD = re.compile(r"\*\*([^*]+)\*\*")


def _inline(text: str) -> str:
    parts = _INLINE_CODE.split(text)
    out = []
    for i, p in enumerate(parts):
        if i % 2:
            out.append(f"<code>{html.escape(p)}</code>")
        else:
            out.append(_BOLD.sub(r"<strong>\1</strong>", html.escape(p)))
    return "".join(out)


def to_html(md: str, title: str = "") -> str:
    """Headings, paragraphs, lists, fenced code, tables, `code` and **bold**; everything escaped."""
    lines = md.splitlines()
    out: list[str] = []
    i = 0
    para: list[str] = []

    def flush() -> None:
        if para:
            out.append(f"<p>{_inline(' '.join(para))}</p>")
            para.clear()

    while i < len(lines):
        ln = lines[i]
        s = ln.strip()
        if s.startswith("```"):
            flush()
            body = []
            i += 1
            while i < len(lines) and not lines[i].strip().startswith("```"):
                body.append(lines[i])
                i += 1
            out.append(f"<pre><code>{html.escape(chr(10).join(body))}</code></pre>")
        elif m := re.match(r"^(#{1,6})\s+(.*)$", s):
            flush()
            n = len(m.group(1))
            out.append(f"<h{n}>{_inline(m.group(2))}</h{n}>")
        elif s.startswith("|"):
            flush()
            rows = []
            while i < len(lines) and lines[i].strip().startswith("|"):
                cells = [c.strip() for c in lines[i].strip().strip("|").split("|")]
                if not all(re.match(r"^:?-+:?$", c) for c in cells):
                    rows.append(cells)
                i += 1
            i -= 1
            head, *body_rows = rows or [[]]
            t = ["<table>", "<thead><tr>" + "".join(f"<th>{_inline(c)}</th>" for c in head) + "</tr></thead>", "<tbody>"]
            t += ["<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in r) + "</tr>" for r in body_rows]
            out.append("\n".join(t + ["</tbody>", "</table>"]))
        elif re.match(r"^(- |\d+\. )", s):
            flush()
            ordered = bool(re.match(r"^\d+\. ", s))
            tag = "ol" if ordered else "ul"
            items = []
            while i < len(lines) and re.match(r"^(- |\d+\. )", lines[i].strip()) and bool(re.match(r"^\d+\. ", lines[i].strip())) == ordered:
                items.append(re.sub(r"^(- |\d+\. )", "", lines[i].strip()))
                i += 1
                while i < len(lines) and lines[i].startswith("   ") and lines[i].strip() and not lines[i].strip().startswith("```"):
                    items[-1] += " " + lines[i].strip()
                    i += 1
            i -= 1
            out.append(f"<{tag}>" + "".join(f"<li>{_inline(x)}</li>" for x in items) + f"</{tag}>")
        elif not s:
            flush()
        else:
            para.append(s)
        i += 1
    flush()
    return (
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>" + html.escape(title) + "</title></head>\n<body>\n"
        + "\n".join(out) + "\n</body></html>\n"
    )


# --------------------------------------------------------------------------- new-region checks


@dataclass
class Step:
    id: str
    title: str
    status: str  # done | not done | manual
    detail: str = ""
    command: str = ""


@dataclass
class RegionCheck:
    region: str
    steps: list[Step] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(s.status == "done" for s in self.steps if s.status != "manual")

    def by_id(self) -> dict[str, Step]:
        return {s.id: s for s in self.steps}


def _columns(dsn: str) -> dict[tuple[str, str], str]:
    import psycopg

    with psycopg.connect(dsn, connect_timeout=5) as c:
        rows = c.execute(
            "SELECT table_name, column_name, data_type, is_nullable FROM information_schema.columns"
            " WHERE table_schema = 'public' ORDER BY table_name, ordinal_position"
        ).fetchall()
    return {(t, col): f"{typ}{'' if nullable == 'YES' else ' not null'}" for t, col, typ, nullable in rows}


def check_new_region(cat: Any, conns: Any, region: str) -> RegionCheck:
    """Run the checkable steps of the new-region playbook; each is done, not done, or manual."""
    import psycopg

    from residency import policy
    from residency.errors import ResidencyError

    r = cat.region(region)  # unknown region: InputError
    out = RegionCheck(region)
    add = out.steps.append
    add(Step("validate", "regions.yaml entry validates", "done",
             f"{r.aws_region}, jurisdiction {r.jurisdiction}, backups in {r.backup_region}, status {r.status}",
             f"residency regions validate && residency regions show {region}"))
    add(Step("quotas", "service quotas (VPCs, RDS instances, Elastic IPs)", "manual", "checked in the AWS account",
             f"aws service-quotas list-service-quotas --service-code rds --region {r.aws_region}"))
    opt = [a for a in (r.aws_region, r.backup_region) if a in OPT_IN_REGIONS]
    add(Step("opt-in", "opt-in regions enabled", "manual" if opt else "done",
             f"{', '.join(opt)} must be enabled in the account" if opt else "no opt-in region involved",
             f"aws account get-region-opt-status --region-name {opt[0]}" if opt else ""))
    d = policy.may_copy(cat, region, r.backup_region)
    add(Step("policy-backups", "backups stay inside the jurisdiction", "done" if d else "not done", d.reason,
             f"residency regions show {region}"))
    actives = [o.name for o in cat.regions.values() if o.name != region and o.status == "active"]
    moves_ok = [o for o in actives if policy.may_move(cat, o, region)]
    if moves_ok:
        add(Step("policy-moves", "policy lets workspaces move in", "done", f"from {', '.join(moves_ok)}", ""))
    else:
        why = policy.may_move(cat, actives[0], region).reason if actives else "no other active region"
        add(Step("policy-moves", "policy lets workspaces move in", "not done", why,
                 f"set status: active for '{region}' in regions.yaml (after the smoke move)"))
    add(Step("stack", "stack previewed and deployed", "manual", "Pulumi: preview, review, deploy",
             f"residency stacks preview --region {region} && residency stacks up --region {region}"))
    # database
    try:
        ep = conns.region(region)
    except ResidencyError as exc:
        ep = None
        add(Step("database", "region database reachable", "not done", str(exc), ""))
    if ep is not None:
        try:
            with psycopg.connect(ep.dsn, connect_timeout=5) as c:
                ver = c.execute("SHOW server_version").fetchone()[0]  # type: ignore[index]
            want = r.environment.database.version
            same = ver.split(".")[0] == str(want).split(".")[0]
            add(Step("database", "region database reachable", "done" if same else "not done",
                     f"PostgreSQL {ver}" + ("" if same else f", but regions.yaml says {want}"), ""))
        except psycopg.Error as exc:
            from residency.connections import redact

            first = first_line(exc)
            add(Step("database", "region database reachable", "not done", f"{redact(ep.dsn)}: {first}", ""))
        # buckets
        try:
            from residency.connections import s3_client

            s3 = s3_client(ep)
            missing = []
            for logical in r.environment.buckets:
                try:
                    s3.head_bucket(Bucket=ep.bucket(logical))
                except Exception:  # noqa: BLE001 - any failure means "not there for us"
                    missing.append(ep.bucket(logical))
            add(Step("buckets", "buckets present", "not done" if missing else "done",
                     f"missing: {', '.join(missing)}" if missing else ", ".join(ep.bucket(b) for b in r.environment.buckets),
                     f"residency stacks up --region {region}" if missing else ""))
        except Exception as exc:  # noqa: BLE001
            add(Step("buckets", "buckets present", "not done", f"S3 not reachable: {exc}", ""))
        # schema parity with an existing region
        ref = next((o for o in actives if o in conns.regions), None)
        if ref is None:
            add(Step("schema", "schema matches an existing region", "not done", "no other active region is reachable to compare with", ""))
        else:
            try:
                a, b = _columns(conns.region(ref).dsn), _columns(ep.dsn)
                diffs = [f"{t}.{c}: missing" for (t, c) in a.keys() - b.keys()]
                diffs += [f"{t}.{c}: not in {ref}" for (t, c) in b.keys() - a.keys()]
                diffs += [f"{t}.{c}: {b[(t, c)]}, {ref} has {a[(t, c)]}" for (t, c) in a.keys() & b.keys() if a[(t, c)] != b[(t, c)]]
                tables = len({t for t, _ in a})
                add(Step("schema", "schema matches an existing region", "not done" if diffs else "done",
                         ("; ".join(sorted(diffs)[:10]) + (f" (+{len(diffs) - 10} more)" if len(diffs) > 10 else "")) if diffs
                         else f"{tables} tables, {len(a)} columns identical to {ref}", ""))
            except psycopg.Error as exc:
                add(Step("schema", "schema matches an existing region", "not done", first_line(exc), ""))
    # id ranges: the region's identity/serial sequences confined to its own range (issue 16)
    if ep is not None:
        import os

        from residency import idranges

        try:
            with psycopg.connect(conns.control_dsn, connect_timeout=5, autocommit=True) as c:
                x = idranges.plan_ids(cat, conns, os.environ.get("RESIDENCY_APP_SCHEMA") or "public", c).region(region)
            if x.skipped:
                detail = x.skipped
            elif x.error or x.refusals:
                detail = "; ".join(x.refusals)
            elif x.confined:
                detail = f"{len(x.sequences)} id sequences in {x.low}..{x.high} (number {x.number}, {x.number_source})"
            else:
                todo = [s.name for s in x.sequences if s.status != "confined"]
                detail = (f"{len(todo)} of {len(x.sequences)} id sequences not in {x.low}..{x.high} (number {x.number}, {x.number_source}): "
                          + ", ".join(todo[:5]) + (" ..." if len(todo) > 5 else ""))
            add(Step("ids", "id sequences confined to the region's range", "done" if x.confined else "not done", detail,
                     "residency regions ids --apply"))
        except psycopg.Error as exc:
            add(Step("ids", "id sequences confined to the region's range", "not done", f"control plane: {first_line(exc)}",
                     "residency regions ids --apply"))
    # smoke move, routing
    try:
        with psycopg.connect(conns.control_dsn, connect_timeout=5) as c:
            row = c.execute(
                "SELECT id, workspace_id, state FROM residency.moves WHERE target = %s AND state IN ('cut_over', 'cleaned') ORDER BY id DESC LIMIT 1",
                (region,),
            ).fetchone()
        add(Step("smoke-move", "smoke move of a test workspace", "done" if row else "not done",
                 f"move {row[0]} of {row[1]} is {row[2]}" if row else f"no completed move into {region} yet",
                 f"residency request create <test-workspace> --to {region} --window now/1h --requested-by <you>"))
    except psycopg.Error as exc:
        add(Step("smoke-move", "smoke move of a test workspace", "not done", f"control plane: {first_line(exc)}", ""))
    add(Step("routing", "directory and routing: region active", "done" if r.status == "active" else "not done",
             f"status {r.status}", f"set status: active for '{region}' in regions.yaml, merge, deploy"))
    add(Step("announce", "announcement", "manual", "tell sales and support the region is open",
             f"residency playbook render new-region --region {region} --format html"))
    return out
