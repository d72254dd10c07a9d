//! The playground: GraphiQL served by the binary itself, so it works on a machine without
//! internet. Its scripts and styles (pinned versions, licenses in
//! `assets/graphiql/LICENSES.txt`) are embedded gzipped and served with long-lived caching
//! under a versioned path and an ETag. Subscriptions run over graphql-ws from the page.
//!
//! When the server made its own development secret, the page also carries the dev token in
//! its default headers and a tab of example operations; never when a secret is configured.

use std::io::Read as _;

use axum::extract::{Path, State};
use axum::http::header::{
    ACCEPT_ENCODING, CACHE_CONTROL, CONTENT_ENCODING, CONTENT_TYPE, ETAG, IF_NONE_MATCH, VARY,
};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use serde_json::json;

use super::HttpState;

/// The GraphiQL release the assets come from (part of their path and ETag).
pub const GRAPHIQL_VERSION: &str = "3.8.3";

/// One embedded file.
struct Asset {
    name: &'static str,
    content_type: &'static str,
    gzipped: &'static [u8],
}

const ASSETS: &[Asset] = &[
    Asset {
        name: "graphiql.min.js",
        content_type: "text/javascript; charset=utf-8",
        gzipped: include_bytes!("../../assets/graphiql/graphiql.min.js.gz"),
    },
    Asset {
        name: "graphiql.min.css",
        content_type: "text/css; charset=utf-8",
        gzipped: include_bytes!("../../assets/graphiql/graphiql.min.css.gz"),
    },
    Asset {
        name: "react.production.min.js",
        content_type: "text/javascript; charset=utf-8",
        gzipped: include_bytes!("../../assets/graphiql/react.production.min.js.gz"),
    },
    Asset {
        name: "react-dom.production.min.js",
        content_type: "text/javascript; charset=utf-8",
        gzipped: include_bytes!("../../assets/graphiql/react-dom.production.min.js.gz"),
    },
    Asset {
        name: "graphql-ws.min.js",
        content_type: "text/javascript; charset=utf-8",
        gzipped: include_bytes!("../../assets/graphiql/graphql-ws.min.js.gz"),
    },
];

/// Example operations for the default tab (with a dev token only).
const EXAMPLES: &str = r#"# Welcome to TaskNest. This server made its own development secret, so the
# Headers tab already holds a token for user "dev".
#
# 1. Run CreateProject, copy its id into the variables.
# 2. Run Events (it keeps running), then CreateTask in another tab: the event arrives.

mutation CreateProject {
  createProject(input: {name: "My board"}) { id name }
}

mutation CreateTask($projectId: ID!) {
  createTask(input: {projectId: $projectId, title: "Try TaskNest"}) { id title version }
}

subscription Events($projectId: ID!) {
  projectEvents(projectId: $projectId) { seq kind actor { name } task { title status } }
}
"#;

/// `GET /`: the GraphiQL page.
pub async fn page(State(state): State<HttpState>) -> Response {
    let dev_token = state.app.config.dev_token.as_deref();
    let settings = json!({
        "endpoint": "/graphql",
        "headers": dev_token.map(|t| json!({ "Authorization": format!("Bearer {t}") }).to_string()),
        "query": dev_token.map(|_| EXAMPLES),
        "variables": dev_token.map(|_| r#"{"projectId": ""}"#),
    });
    // `</` cannot end the script early once escaped.
    let settings = settings.to_string().replace("</", "<\\/");
    let base = format!("/playground/{GRAPHIQL_VERSION}");
    let html = format!(
        r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>TaskNest</title>
<link rel="stylesheet" href="{base}/graphiql.min.css">
<style>html, body, #graphiql {{ height: 100%; margin: 0; }}</style>
</head>
<body>
<div id="graphiql">Loading…</div>
<script src="{base}/react.production.min.js"></script>
<script src="{base}/react-dom.production.min.js"></script>
<script src="{base}/graphql-ws.min.js"></script>
<script src="{base}/graphiql.min.js"></script>
<script>
(function () {{
  var settings = {settings};
  var params = new URLSearchParams(location.search);
  var http = new URL(settings.endpoint, location.href).href;
  var ws = http.replace(/^http/, "ws");
  // The socket authenticates with the Authorization header of GraphiQL's Headers tab.
  function currentHeaders() {{
    try {{
      return JSON.parse(localStorage.getItem("graphiql:headers") || settings.headers || "{{}}");
    }} catch (e) {{
      return {{}};
    }}
  }}
  var wsClient = graphqlWs.createClient({{
    url: ws,
    lazy: true,
    connectionParams: function () {{
      var h = currentHeaders();
      return {{ authorization: h.Authorization || h.authorization || "" }};
    }},
  }});
  var fetcher = GraphiQL.createFetcher({{ url: http, wsClient: wsClient }});
  var props = {{ fetcher: fetcher, defaultEditorToolsVisibility: true }};
  if (settings.headers) props.defaultHeaders = settings.headers;
  if (settings.query) props.defaultQuery = settings.query;
  if (settings.variables) props.defaultVariables = settings.variables;
  if (params.get("query")) props.query = params.get("query");
  if (params.get("variables")) props.variables = params.get("variables");
  ReactDOM.createRoot(document.getElementById("graphiql")).render(
    React.createElement(GraphiQL, props)
  );
}})();
</script>
</body>
</html>
"#
    );
    let mut response = Html(html).into_response();
    response
        .headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

/// `GET /playground/{version}/{file}`: an embedded asset, cached for a year (its path
/// changes with the version), gzipped for clients that accept it.
pub async fn asset(Path((version, name)): Path<(String, String)>, headers: HeaderMap) -> Response {
    let Some(asset) = ASSETS.iter().find(|a| a.name == name) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    if version != GRAPHIQL_VERSION {
        return StatusCode::NOT_FOUND.into_response();
    }
    let etag = format!("\"graphiql-{GRAPHIQL_VERSION}-{}\"", asset.name);
    let cached = headers
        .get(IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag));
    let mut response = if cached {
        StatusCode::NOT_MODIFIED.into_response()
    } else if accepts_gzip(&headers) {
        let mut response = asset.gzipped.into_response();
        response
            .headers_mut()
            .insert(CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        response
    } else {
        let mut plain = Vec::new();
        if flate2::read::GzDecoder::new(asset.gzipped)
            .read_to_end(&mut plain)
            .is_err()
        {
            return StatusCode::INTERNAL_SERVER_ERROR.into_response();
        }
        plain.into_response()
    };
    let out = response.headers_mut();
    out.insert(CONTENT_TYPE, HeaderValue::from_static(asset.content_type));
    out.insert(
        CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=31536000, immutable"),
    );
    out.insert(VARY, HeaderValue::from_static("accept-encoding"));
    if let Ok(etag) = HeaderValue::from_str(&etag) {
        out.insert(ETAG, etag);
    }
    response
}

fn accepts_gzip(headers: &HeaderMap) -> bool {
    headers
        .get(ACCEPT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(',').any(|coding| {
                let mut parts = coding.trim().split(';');
                let name = parts.next().unwrap_or_default().trim();
                let refused = parts.any(|p| p.trim().replace(' ', "") == "q=0");
                (name.eq_ignore_ascii_case("gzip") || name == "*") && !refused
            })
        })
}
