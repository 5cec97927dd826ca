"""The status page at `/`: the deployments, the droplet gauge, and one deployment's live events and build log.

The server renders the HTML with the current data (when API tokens are configured it renders the frame only,
since a browser's GET carries no token). A little plain JavaScript, with no build step and nothing loaded from
elsewhere, then speaks `graphql-transport-ws` to `/graphql` directly: it subscribes to `deploymentUpdates` to
keep the table and the gauge current, and, on a deployment's page (`/?deployment=<id>`), to
`deploymentProgress` for its events; a finished deployment's build log comes from `Deployment.buildLog`. With
auth on, the page asks for a token and keeps it in the tab's sessionStorage.
"""

from __future__ import annotations

import html
import json
import uuid

from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.routing import Route

from graphql_api.context import ServicesProvider
from models import deployment as db
from models.slot import slot_holders, slot_usage

#: Deployments the page lists.
PAGE_SIZE = 50
STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 0; color: #1d2330; background: #f6f7f9; }
header { background: #1d2330; color: #fff; padding: .8rem 1.5rem; display: flex; gap: 2rem; align-items: center; }
header h1 { font-size: 1.1rem; margin: 0; } header a { color: #9cc3ff; }
main { padding: 1rem 1.5rem; } table { border-collapse: collapse; width: 100%; background: #fff; }
th, td { text-align: left; padding: .4rem .6rem; border-bottom: 1px solid #e3e6ea; }
th { font-weight: 600; font-size: .8rem; color: #5b6475; text-transform: uppercase; }
code, .mono { font-family: ui-monospace, monospace; font-size: .85rem; }
.status { display: inline-block; padding: .05rem .5rem; border-radius: 1rem; font-size: .8rem; font-weight: 600; }
.QUEUED { background: #e8eaf0; } .PROCESSING, .DESTROYING { background: #d6e6ff; color: #0b4bb3; }
.COMPLETED { background: #d5f5df; color: #136b33; } .FAILED { background: #ffd9d6; color: #a11a0e; }
.CANCELLED, .DESTROYED { background: #eee; color: #666; }
.gauge { display: flex; align-items: center; gap: .6rem; }
.bar { width: 10rem; height: .7rem; background: #3a4254; border-radius: .4rem; overflow: hidden; }
.bar span { display: block; height: 100%; background: #55c27a; } .full .bar span { background: #e5534b; }
#live { font-size: .8rem; color: #9aa3b5; } section { margin-top: 1.2rem; }
pre { background: #11151c; color: #d8dee9; padding: .8rem; overflow: auto; max-height: 24rem; font-size: .8rem; }
.stderr { color: #ff8d85; } .error { color: #a11a0e; } #prompt { background: #fff4d6; padding: 1rem; }
dl { display: grid; grid-template-columns: max-content 1fr; gap: .2rem 1rem; background: #fff; padding: .8rem; }
dt { color: #5b6475; }
"""


def _e(value: object) -> str:
    return html.escape("" if value is None else str(value))


def _row(row: db.Deployment) -> str:
    spec = row.spec if isinstance(row.spec, dict) else {}
    status = row.status.value
    return (
        f'<tr id="d-{row.id}" data-id="{row.id}"><td><a class="mono" href="/?deployment={row.id}">{row.id}</a></td>'
        f'<td><span class="status {status}">{status}</span></td><td class="stage">{_e(row.stage.value)}</td>'
        f'<td class="name">{_e(spec.get("name") or "")}</td><td class="mono">{_e(row.created_at.isoformat())}</td></tr>'
    )


def _gauge(active: int, limit: int, holders: list[uuid.UUID]) -> str:
    width = 100 if limit <= 0 else min(100, round(100 * active / limit))
    full = " full" if active >= limit else ""
    held = ", ".join(f'<a href="/?deployment={h}">{str(h)[:8]}</a>' for h in holders)
    return (
        f'<div class="gauge{full}" id="gauge"><span>Droplet slots</span><div class="bar"><span style="width:{width}%">'
        f'</span></div><strong id="gauge-text">{active} / {limit}</strong><span id="holders">{held}</span></div>'
    )


def _detail(row: db.Deployment, events: list[db.DeploymentEvent]) -> str:
    fields = [
        ("status", f'<span class="status {row.status.value}" id="detail-status">{row.status.value}</span>'),
        ("stage", f'<span id="detail-stage">{_e(row.stage.value)}</span>'),
        ("failed at", _e(row.failed_stage.value if row.failed_stage else "")),
        ("error", f'<span class="error" id="detail-error">{_e(row.error)}</span>'),
        ("droplet", _e(row.droplet_name)),
        ("application", _e(row.application_uuid)),
    ]
    items = "".join(f"<dt>{label}</dt><dd>{value}</dd>" for label, value in fields)
    lines = "".join(
        f'<tr><td>{e.sequence}</td><td><span class="status {e.status.value}">{e.status.value}</span></td>'
        f"<td>{_e(e.stage.value)}</td><td>{_e(e.message)}</td></tr>"
        for e in events
    )
    return (
        f'<section id="detail" data-id="{row.id}" data-last="{events[-1].sequence if events else 0}">'
        f"<h2>Deployment <code>{row.id}</code></h2><dl>{items}</dl>"
        f"<h3>Events</h3><table><thead><tr><th>#</th><th>status</th><th>stage</th><th>message</th></tr></thead>"
        f'<tbody id="events">{lines}</tbody></table>'
        f'<h3>Build log</h3><pre id="build-log">Shown when the deployment has finished.</pre></section>'
    )


SCRIPT = r"""
(function () {
  var AUTH = document.body.dataset.auth === "true";
  var detail = document.getElementById("detail");
  var token = sessionStorage.getItem("deployer-token") || "";
  var FIELDS = "id status stage name createdAt error failedStage";
  var live = document.getElementById("live");
  function esc(s) {
    var d = document.createElement("div"); d.textContent = s == null ? "" : String(s); return d.innerHTML;
  }
  function gql(query, variables) {
    var headers = {"content-type": "application/json"};
    if (token) headers.Authorization = "Bearer " + token;
    var body = JSON.stringify({query: query, variables: variables || {}});
    return fetch("/graphql", {method: "POST", headers: headers, body: body})
      .then(function (r) {
        if (r.status === 401) { askToken("That token was refused."); throw new Error("unauthenticated"); }
        return r.json();
      });
  }
  function askToken(message) {
    var prompt = document.getElementById("prompt");
    prompt.hidden = false;
    document.getElementById("prompt-message").textContent = message || "";
  }
  document.getElementById("prompt-form").onsubmit = function (event) {
    event.preventDefault();
    token = document.getElementById("token").value.trim();
    sessionStorage.setItem("deployer-token", token);
    document.getElementById("prompt").hidden = true;
    connect();
  };
  function upsert(d) {
    var rows = document.getElementById("rows");
    var tr = document.getElementById("d-" + d.id);
    if (!tr) {
      tr = document.createElement("tr");
      tr.id = "d-" + d.id;
      tr.dataset.id = d.id;
      rows.insertBefore(tr, rows.firstChild);
      var empty = document.getElementById("empty"); if (empty) empty.remove();
    }
    tr.innerHTML = '<td><a class="mono" href="/?deployment=' + esc(d.id) + '">' + esc(d.id) + '</a></td>' +
      '<td><span class="status ' + esc(d.status) + '">' + esc(d.status) + '</span></td>' +
      '<td class="stage">' + esc(d.stage) + '</td><td class="name">' + esc(d.name || "") + '</td>' +
      '<td class="mono">' + esc(d.createdAt) + '</td>';
  }
  function gauge() {
    return gql("{ dropletCount { active limit holders { id } } }").then(function (body) {
      if (!body.data) return;
      var c = body.data.dropletCount;
      var g = document.getElementById("gauge");
      g.className = "gauge" + (c.active >= c.limit ? " full" : "");
      g.querySelector(".bar span").style.width = Math.min(100, Math.round(100 * c.active / Math.max(c.limit, 1))) + "%";
      document.getElementById("gauge-text").textContent = c.active + " / " + c.limit;
      document.getElementById("holders").innerHTML = c.holders.map(function (h) {
        return '<a href="/?deployment=' + esc(h.id) + '">' + esc(h.id.slice(0, 8)) + "</a>"; }).join(", ");
    });
  }
  function reload() {
    gql("{ deployments(first: " + document.body.dataset.page + ") { edges { node { " + FIELDS + " } } } }")
      .then(function (body) {
        if (!body.data) return;
        body.data.deployments.edges.slice().reverse().forEach(function (e) { upsert(e.node); });
      });
    gauge();
  }
  var FINAL = {COMPLETED: 1, FAILED: 1, CANCELLED: 1, DESTROYED: 1};
  function buildLog() {
    gql("query($id: ID!) { deployment(id: $id) { status error " +
        "buildLog(lines: 200) { status lines { text stream } } } }", {id: detail.dataset.id}).then(function (body) {
      var pre = document.getElementById("build-log");
      if (!body.data || !body.data.deployment) { pre.textContent = JSON.stringify(body.errors || body); return; }
      var d = body.data.deployment;
      if (!d.buildLog) {
        pre.textContent = "Coolify no longer has a build log for this deployment" +
          (d.status === "FAILED" ? " (its cleanup deleted the application). Why it failed: " + (d.error || "-") : ".");
        return;
      }
      pre.innerHTML = d.buildLog.lines.map(function (l) {
        return '<span class="' + esc(l.stream) + '">' + esc(l.text) + "</span>"; }).join("\n") || "(empty)";
    });
  }
  function addEvent(e) {
    if (e.sequence <= Number(detail.dataset.last)) return;
    detail.dataset.last = e.sequence;
    var tr = document.createElement("tr");
    tr.innerHTML = "<td>" + e.sequence + '</td><td><span class="status ' + esc(e.status) + '">' + esc(e.status) +
      "</span></td><td>" + esc(e.stage) + "</td><td>" + esc(e.message) + "</td>";
    document.getElementById("events").appendChild(tr);
    var s = document.getElementById("detail-status");
    s.className = "status " + e.status; s.textContent = e.status;
    document.getElementById("detail-stage").textContent = e.stage;
    if (FINAL[e.status]) buildLog();
  }
  var socket = null;
  function connect() {
    if (AUTH && !token) { askToken(); return; }
    if (socket) socket.close();
    var ws = new WebSocket(location.origin.replace(/^http/, "ws") + "/graphql", "graphql-transport-ws");
    socket = ws;
    ws.onopen = function () {
      ws.send(JSON.stringify({type: "connection_init", payload: token ? {Authorization: "Bearer " + token} : {}}));
    };
    ws.onmessage = function (message) {
      var m = JSON.parse(message.data);
      if (m.type === "ping") { ws.send(JSON.stringify({type: "pong"})); return; }
      if (m.type === "connection_ack") {
        live.textContent = "live";
        ws.send(JSON.stringify({id: "updates", type: "subscribe", payload: {query:
          "subscription { deploymentUpdates { deployment { " + FIELDS + " } } }"}}));
        if (detail) {
          ws.send(JSON.stringify({id: "progress", type: "subscribe", payload: {
            query: "subscription($id: ID!, $after: Int) { deploymentProgress(id: $id, afterSequence: $after) " +
              "{ sequence status stage message } }",
            variables: {id: detail.dataset.id, after: Number(detail.dataset.last)}}}));
          if (FINAL[document.getElementById("detail-status").textContent]) buildLog();
        }
        reload();
        return;
      }
      if (m.type === "next" && m.id === "updates" && m.payload.data) {
        var d = m.payload.data.deploymentUpdates.deployment;
        if (d) upsert(d);
        gauge();
      } else if (m.type === "next" && m.id === "progress" && m.payload.data) {
        addEvent(m.payload.data.deploymentProgress);
      } else if (m.type === "error" || (m.type === "next" && m.payload.errors)) {
        live.textContent = "error: " + JSON.stringify(m.payload);
      }
    };
    ws.onclose = function (event) {
      if (socket !== ws) return;
      if (event.code === 4401) { live.textContent = "token refused"; askToken("That token was refused."); return; }
      live.textContent = "reconnecting…";
      setTimeout(connect, 2000);
    };
  }
  connect();
})();
"""


def render_page(
    *,
    auth_required: bool,
    rows: list[db.Deployment],
    usage: tuple[int, int, list[uuid.UUID]],
    detail: str,
) -> str:
    """The whole page."""
    body_rows = "".join(_row(row) for row in rows)
    if not body_rows:
        body_rows = '<tr id="empty"><td colspan="5">No deployments yet.</td></tr>'
    prompt = (
        '<section id="prompt" hidden><form id="prompt-form"><label>This API needs a token (kept in this tab only): '
        '<input id="token" type="password" autocomplete="off"></label> <button>Use it</button> '
        '<span id="prompt-message"></span></form></section>'
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>deployer · status</title>
<meta name="viewport" content="width=device-width, initial-scale=1"><style>{STYLE}</style></head>
<body data-auth="{json.dumps(auth_required)}" data-page="{PAGE_SIZE}">
<header><h1><a href="/">deployer</a></h1>{_gauge(*usage)}<a href="/graphql">GraphiQL</a>
<span id="live">connecting…</span></header>
<main>{prompt}{detail}
<section><h2>Deployments</h2><table><thead><tr><th>id</th><th>status</th><th>stage</th><th>name</th><th>created</th>
</tr></thead><tbody id="rows">{body_rows}</tbody></table></section>
</main><script>{SCRIPT}</script></body></html>"""


def status_page_routes(provider: ServicesProvider, *, auth_required: bool) -> list[Route]:
    """The `/` route (the app adds it next to `/graphql`)."""

    async def page(request: Request) -> HTMLResponse:
        rows: list[db.Deployment] = []
        usage: tuple[int, int, list[uuid.UUID]] = (0, 0, [])
        detail = ""
        wanted = request.query_params.get("deployment")
        if not auth_required:
            services = provider()
            rows = await db.Deployment.all().order_by("-created_at", "-id").limit(PAGE_SIZE)
            slots = await slot_usage(services.settings.max_active_droplets)
            usage = (slots.active, slots.limit, await slot_holders())
            if wanted:
                try:
                    row = await db.Deployment.get_or_none(id=uuid.UUID(wanted))
                except ValueError:
                    row = None
                if row is not None:
                    events = await db.DeploymentEvent.filter(deployment_id=row.id).order_by("sequence")
                    detail = _detail(row, list(events))
        elif wanted:
            try:
                ident = uuid.UUID(wanted)
            except ValueError:
                ident = None
            if ident is not None:  # the frame only: the script fills it once it has a token
                detail = (
                    f'<section id="detail" data-id="{ident}" data-last="0"><h2>Deployment <code>{ident}</code></h2>'
                    '<dl><dt>status</dt><dd><span class="status" id="detail-status"></span></dd><dt>stage</dt>'
                    '<dd id="detail-stage"></dd></dl><h3>Events</h3><table><tbody id="events"></tbody></table>'
                    '<h3>Build log</h3><pre id="build-log">Shown when the deployment has finished.</pre></section>'
                )
        html_text = render_page(auth_required=auth_required, rows=rows, usage=usage, detail=detail)
        return HTMLResponse(html_text, headers={"Cache-Control": "no-store"})

    return [Route("/", page, methods=["GET"])]
