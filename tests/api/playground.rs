//! The playground works offline: GraphiQL's page and assets come from the binary, cached by
//! version and ETag, and the dev token is filled in only when the server made its own secret.

use crate::helpers::*;

/// Every `src`/`href` the page loads.
fn references(html: &str) -> Vec<String> {
    let mut found = Vec::new();
    for attribute in ["src=\"", "href=\""] {
        let mut rest = html;
        while let Some(at) = rest.find(attribute) {
            rest = &rest[at + attribute.len()..];
            let end = rest.find('"').expect("closed attribute");
            found.push(rest[..end].to_owned());
        }
    }
    found
}

#[tokio::test]
async fn the_page_loads_only_assets_the_binary_serves_with_long_caching() {
    let app = spawn_app().await;
    let page = app
        .client
        .get(format!("http://{}/", app.addr))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    let assets = references(&html);
    assert_eq!(assets.len(), 5, "{assets:?}");
    for asset in &assets {
        assert!(
            asset.starts_with("/playground/"),
            "{asset} is not served locally"
        );
        let url = format!("http://{}{asset}", app.addr);
        let response = app.client.get(&url).send().await.unwrap();
        assert_eq!(response.status(), 200, "{asset}");
        let cache = response.headers()["cache-control"]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(cache.contains("max-age=31536000"), "{cache}");
        let etag = response.headers()["etag"].to_str().unwrap().to_owned();
        let body = response.bytes().await.unwrap();
        assert!(body.len() > 1000, "{asset}: {} bytes", body.len());
        // A client that does not take gzip gets the plain file.
        let text = String::from_utf8(body.to_vec()).expect("plain text");
        assert!(!text.contains("https://unpkg.com") && !text.contains("cdn.jsdelivr"));
        let again = app
            .client
            .get(&url)
            .header("if-none-match", &etag)
            .send()
            .await
            .unwrap();
        assert_eq!(again.status(), 304, "{asset}");
        let zipped = app
            .client
            .get(&url)
            .header("accept-encoding", "gzip")
            .send()
            .await
            .unwrap();
        assert_eq!(zipped.headers()["content-encoding"], "gzip");
    }
    assert!(!html.contains("Bearer"), "no token without a dev secret");
    let missing = app
        .client
        .get(format!(
            "http://{}/playground/0.0.0/graphiql.min.js",
            app.addr
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
}

#[tokio::test]
async fn a_server_with_its_own_dev_secret_fills_in_the_token_and_examples() {
    let token = "dev.token.value";
    let app = spawn_app_with(|c| c.dev_token = Some(token.into())).await;
    let html = app
        .client
        .get(format!("http://{}/", app.addr))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        html.contains(&format!("Bearer {token}")),
        "the token is in the default headers"
    );
    assert!(html.contains("subscription Events"), "example operations");
}

/// Chromium's path, or `None` after a loud SKIPPED line (under `CI=true` a missing browser
/// fails the test: `.ci/run` installs the Debian package).
fn require_chromium(test: &str) -> Option<String> {
    for path in ["/usr/bin/chromium", "/usr/bin/chromium-browser"] {
        if std::path::Path::new(path).exists() {
            return Some(path.to_owned());
        }
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{test} needs Chromium (apt-get install chromium) (CI=true)");
    }
    eprintln!("SKIPPED: {test} needs Chromium (apt-get install chromium)");
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graphiql_in_a_real_browser_runs_a_query_and_a_live_subscription_offline() {
    let test = "graphiql_in_a_real_browser_runs_a_query_and_a_live_subscription_offline";
    let (Some(dir), Some(chromium)) = (require_client_project(test), require_chromium(test)) else {
        return;
    };
    // As when the server made its own secret: the page carries a token for "dev-…".
    let user = format!("dev-{}", uuid::Uuid::new_v4().simple());
    let token = tasknest::auth::JwtKeys::new(SECRET.as_bytes())
        .mint(&user, "Dev User", None, std::time::Duration::from_secs(600))
        .expect("mint");
    let page_token = token.clone();
    let app = spawn_app_with(move |c| c.dev_token = Some(page_token)).await;
    let project = app.create_project(&token, "Browser board").await;
    let task = app.create_task(&token, &project, "T").await;
    let screenshot = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("graphiql.png");
    let env = [
        ("TASKNEST_URL", format!("http://{}/", app.addr)),
        ("TOKEN", token),
        ("PROJECT", project),
        ("TASK", task["id"].as_str().expect("id").to_owned()),
        ("CHROMIUM", chromium),
        ("SCREENSHOT", screenshot.display().to_string()),
    ];
    let result = run_node(&dir, "graphiql-browser.mjs", &env).await;
    assert!(
        result["me"].as_str().expect("me").contains(&user),
        "{result}"
    );
    assert!(
        result["event"]
            .as_str()
            .expect("event")
            .contains("seen in the browser"),
        "{result}"
    );
    assert_eq!(
        result["outside"],
        serde_json::json!([]),
        "nothing left the machine"
    );
    assert!(
        screenshot.exists(),
        "screenshot at {}",
        screenshot.display()
    );
    eprintln!("screenshot: {}", screenshot.display());
}
