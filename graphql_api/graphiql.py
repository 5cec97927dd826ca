"""The page `/graphql` shows a browser: GraphiQL from local files, or deployer's own small query page.

GraphiQL's JavaScript is never committed: `deployer assets` fetches it (pinned, hash-checked) into the assets
folder, and the app serves that folder at `/assets/graphiql/`. The page loads nothing from the internet, so it
works offline and behind strict proxies. When the files are not there, `/graphql` still answers with a page of
our own (plain HTML and JavaScript) that runs operations and shows the schema, and says why GraphiQL is missing.
"""

from __future__ import annotations

import html
from pathlib import Path

#: The files GraphiQL's page loads, relative to `<assets>/graphiql/` (`deployer.assets.GRAPHIQL` fetches them).
GRAPHIQL_FILES = ("react.production.min.js", "react-dom.production.min.js", "graphiql.min.js", "graphiql.min.css")
ASSETS_PATH = "/assets/graphiql"

_GRAPHIQL = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>deployer · GraphiQL</title>
<link rel="stylesheet" href="{assets}/graphiql.min.css">
<style>body {{ margin: 0; height: 100vh; overflow: hidden; }} #graphiql {{ height: 100vh; }}</style>
</head>
<body>
<div id="graphiql">Loading GraphiQL…</div>
<script src="{assets}/react.production.min.js"></script>
<script src="{assets}/react-dom.production.min.js"></script>
<script src="{assets}/graphiql.min.js"></script>
<script>
(function () {{
  var url = window.location.origin + "/graphql";
  var params = new URLSearchParams(window.location.search);
  var token = sessionStorage.getItem("deployer-token");
  var headers = token ? {{ Authorization: "Bearer " + token }} : {{}};
  var fetcher = GraphiQL.createFetcher({{
    url: url,
    headers: headers,
    subscriptionUrl: url.replace(/^http/, "ws"),
    wsConnectionParams: headers,
  }});
  var defaultQuery = params.get("q") || {example};
  ReactDOM.createRoot(document.getElementById("graphiql")).render(
    React.createElement(GraphiQL, {{
      fetcher: fetcher,
      defaultQuery: defaultQuery,
      query: params.get("q") || undefined,
      isHeadersEditorEnabled: true,
      defaultHeaders: token ? JSON.stringify(headers) : undefined,
      shouldPersistHeaders: false,
    }})
  );
}})();
</script>
</body>
</html>
"""

_FALLBACK = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>deployer · GraphQL</title>
<style>
body {{ font: 14px/1.4 system-ui, sans-serif; margin: 1.5rem; color: #1d2330; }}
textarea, input {{ font: 13px ui-monospace, monospace; width: 100%; box-sizing: border-box; }}
pre {{ background: #f4f5f7; padding: .75rem; overflow: auto; max-height: 60vh; }}
.note {{ background: #fff4d6; border: 1px solid #e8c766; padding: .5rem .75rem; }}
.cols {{ display: grid; grid-template-columns: 1fr 1fr; gap: 1rem; }}
</style>
</head>
<body>
<h1>deployer GraphQL</h1>
<p class="note" id="why">GraphiQL is not available: {reason}. Run <code>.venv/bin/deployer assets</code> (it
fetches pinned, hash-checked copies from the npm registry) and reload. Meanwhile this page runs operations.</p>
<div class="cols">
<div>
<label>Operation<textarea id="query" rows="12">{example_text}</textarea></label>
<label>Variables (JSON)<textarea id="variables" rows="3">{{}}</textarea></label>
<label>API token (only when the API requires one; kept in this tab)<input id="token" type="password"></label>
<p><button id="run">Run</button> <button id="schema">Show schema</button></p>
</div>
<div><pre id="result">Press Run.</pre></div>
</div>
<script>
(function () {{
  var token = document.getElementById("token");
  token.value = sessionStorage.getItem("deployer-token") || "";
  function call(query, variables) {{
    sessionStorage.setItem("deployer-token", token.value);
    var headers = {{ "content-type": "application/json" }};
    if (token.value) headers.Authorization = "Bearer " + token.value;
    return fetch("/graphql", {{ method: "POST", headers: headers,
      body: JSON.stringify({{ query: query, variables: variables }}) }}).then(function (r) {{ return r.json(); }});
  }}
  function show(value) {{
    document.getElementById("result").textContent =
      typeof value === "string" ? value : JSON.stringify(value, null, 2);
  }}
  document.getElementById("run").onclick = function () {{
    var variables;
    try {{ variables = JSON.parse(document.getElementById("variables").value || "{{}}"); }}
    catch (e) {{ return show("Variables are not JSON: " + e.message); }}
    call(document.getElementById("query").value, variables).then(show, function (e) {{ show(String(e)); }});
  }};
  function typeName(t) {{
    if (t.kind === "NON_NULL") return typeName(t.ofType) + "!";
    if (t.kind === "LIST") return "[" + typeName(t.ofType) + "]";
    return t.name;
  }}
  var INTROSPECT = "{{ __schema {{ types {{ name kind description fields {{ name args {{ name type {{ ...T }} }} " +
    "type {{ ...T }} }} inputFields {{ name type {{ ...T }} }} enumValues {{ name }} }} }} }} " +
    "fragment T on __Type {{ kind name ofType {{ kind name ofType {{ kind name ofType {{ kind name }} }} }} }}";
  document.getElementById("schema").onclick = function () {{
    call(INTROSPECT, {{}}).then(function (body) {{
      if (!body.data) return show(body);
      var out = [];
      body.data.__schema.types.filter(function (t) {{ return t.name.indexOf("__") !== 0; }})
        .forEach(function (t) {{
          var members = (t.fields || t.inputFields || []).map(function (f) {{
            var args = (f.args || []).map(function (a) {{ return a.name + ": " + typeName(a.type); }});
            return "  " + f.name + (args.length ? "(" + args.join(", ") + ")" : "") + ": " + typeName(f.type);
          }}).concat((t.enumValues || []).map(function (v) {{ return "  " + v.name; }}));
          var body = members.length ? " {{\\n" + members.join("\\n") + "\\n}}" : "";
          var kind = {{OBJECT: "type", INPUT_OBJECT: "input"}}[t.kind] || t.kind.toLowerCase();
          out.push(kind + " " + t.name + body);
        }});
      show(out.join("\\n\\n"));
    }}, function (e) {{ show(String(e)); }});
  }};
}})();
</script>
</body>
</html>
"""

EXAMPLE = (
    "{\n  dropletCount { active limit available }\n  deployments(first: 5) { edges { node { id status stage } } }\n}\n"
)


def missing_files(assets_dir: Path) -> list[str]:
    """GraphiQL's files that are not in the assets folder."""
    folder = assets_dir / "graphiql"
    return [name for name in GRAPHIQL_FILES if not (folder / name).is_file()]


def graphiql_page(assets_dir: Path) -> str:
    """GraphiQL served from local files, or the fallback page saying which files are missing."""
    missing = missing_files(assets_dir)
    if not missing:
        return _GRAPHIQL.format(assets=ASSETS_PATH, example=_js_string(EXAMPLE))
    reason = f"its files are missing from {assets_dir}/graphiql ({', '.join(missing)})"
    return _FALLBACK.format(reason=html.escape(reason), example_text=html.escape(EXAMPLE))


def _js_string(text: str) -> str:
    """`text` as a JavaScript string literal that is safe inside a <script> element."""
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("<", "\\u003c")
    return f'"{escaped}"'
