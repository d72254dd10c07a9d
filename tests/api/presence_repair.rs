//! Presence that an instance missed is made up: after a break in its link to Redis its
//! subscribers get the JOINED and LEFT that happened elsewhere meanwhile, and the users a
//! survivor swept while their instance was cut off are announced again once it writes them
//! back, each change once.

use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::*;
use crate::presence::{EVENTS, presence_event, until_present};

/// `(kind, user name)` of the next presence event, waiting up to `wait`.
async fn heard(app: &TestApp, watcher: &mut WsClient, wait: Duration) -> Option<(String, String)> {
    let message: Value = watcher.next_within(wait).await?;
    let event = presence_event(&message);
    let kind = event["kind"].as_str().unwrap_or("?").to_string();
    Some((
        kind,
        app.name_of(event["user"]["id"].as_str().unwrap_or("?")),
    ))
}

/// The presence events `watcher` hears until it has been quiet for two seconds, sorted.
async fn heard_until_quiet(app: &TestApp, watcher: &mut WsClient) -> Vec<(String, String)> {
    let mut all = Vec::new();
    while let Some(event) = heard(app, watcher, Duration::from_secs(2)).await {
        all.push(event);
    }
    all.sort();
    all
}

fn event(kind: &str, user: &str) -> (String, String) {
    (kind.to_string(), user.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribers_of_an_instance_cut_from_redis_hear_what_they_missed_once_it_is_back() {
    const NAME: &str =
        "subscribers_of_an_instance_cut_from_redis_hear_what_they_missed_once_it_is_back";
    if require_redis(NAME).is_none() {
        return;
    }
    let redis = RedisServer::start().await;
    let target = format!("127.0.0.1:{}", redis.port)
        .parse()
        .expect("an address");
    let proxy = TcpProxy::start(target).await;
    let through_proxy = format!("redis://127.0.0.1:{}", proxy.port);
    let timeout = Duration::from_millis(1500);
    // A reaches Redis through the proxy the test cuts; B directly.
    let a = spawn_app_with(|c| {
        c.redis_url = Some(through_proxy.clone());
        c.presence_timeout = timeout;
    })
    .await;
    let b = spawn_app_sharing(&a, |c| {
        c.redis_url = Some(redis.url());
        c.presence_timeout = timeout;
    })
    .await;
    let alice = a.token("alice");
    let project = a.create_project(&alice, "P").await;
    for user in ["bob", "carol", "dave"] {
        a.add_member(&alice, &project, user, "EDITOR").await;
    }
    let mut on_a = a.ws(&alice).await;
    on_a.subscribe("p", EVENTS, json!({ "p": project })).await;
    until_present(&a, &alice, &project, &["alice"]).await;
    let dave = b.token("dave");
    let mut on_b = b.ws(&dave).await;
    on_b.subscribe("p", EVENTS, json!({ "p": project })).await;
    let mut carol_tab = b.ws(&b.token("carol")).await;
    carol_tab
        .subscribe("p", EVENTS, json!({ "p": project }))
        .await;
    until_present(&b, &dave, &project, &["alice", "carol", "dave"]).await;
    // What each heard of the others joining depends on whose subscription was live first;
    // the rooms know who is there either way.
    heard_until_quiet(&a, &mut on_a).await;
    heard_until_quiet(&b, &mut on_b).await;

    proxy.cut();
    // B takes A for dead once its lease runs out, and tells its subscribers alice left.
    assert_eq!(
        heard(&b, &mut on_b, Duration::from_secs(30)).await,
        Some(event("LEFT", "alice"))
    );
    // Meanwhile, on B: carol goes, bob comes. A hears neither.
    carol_tab.close().await;
    let mut bob_tab = b.ws(&b.token("bob")).await;
    bob_tab
        .subscribe("p", EVENTS, json!({ "p": project }))
        .await;
    until_present(&b, &dave, &project, &["bob", "dave"]).await;
    assert_eq!(
        heard_until_quiet(&b, &mut on_b).await,
        vec![event("JOINED", "bob"), event("LEFT", "carol")]
    );
    assert_eq!(heard_until_quiet(&a, &mut on_a).await, vec![]);

    proxy.restore().await;
    // A's subscriber gets what it missed; B's gets alice back. Once each.
    let mut on_a_heard = Vec::new();
    while on_a_heard.len() < 2 {
        match heard(&a, &mut on_a, Duration::from_secs(30)).await {
            Some(event) => on_a_heard.push(event),
            None => break,
        }
    }
    on_a_heard.extend(heard_until_quiet(&a, &mut on_a).await);
    on_a_heard.sort();
    assert_eq!(
        on_a_heard,
        vec![event("JOINED", "bob"), event("LEFT", "carol")]
    );
    let mut on_b_heard: Vec<_> = heard(&b, &mut on_b, Duration::from_secs(30))
        .await
        .into_iter()
        .collect();
    on_b_heard.extend(heard_until_quiet(&b, &mut on_b).await);
    assert_eq!(on_b_heard, vec![event("JOINED", "alice")]);
    until_present(&a, &alice, &project, &["alice", "bob", "dave"]).await;
    until_present(&b, &dave, &project, &["alice", "bob", "dave"]).await;
    drop(bob_tab);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_that_restarts_empty_makes_nobody_leave_or_join_again() {
    const NAME: &str = "a_redis_that_restarts_empty_makes_nobody_leave_or_join_again";
    if require_redis(NAME).is_none() {
        return;
    }
    let mut redis = RedisServer::start().await;
    let url = redis.url();
    let configure = |c: &mut tasknest::Config| {
        c.redis_url = Some(url.clone());
        c.presence_timeout = Duration::from_millis(1500);
    };
    let a = spawn_app_with(configure).await;
    let b = spawn_app_sharing(&a, configure).await;
    let alice = a.token("alice");
    let project = a.create_project(&alice, "P").await;
    a.add_member(&alice, &project, "bob", "EDITOR").await;
    let mut on_a = a.ws(&alice).await;
    on_a.subscribe("p", EVENTS, json!({ "p": project })).await;
    until_present(&a, &alice, &project, &["alice"]).await;
    let mut on_b = b.ws(&b.token("bob")).await;
    on_b.subscribe("p", EVENTS, json!({ "p": project })).await;
    until_present(&a, &alice, &project, &["alice", "bob"]).await;
    heard_until_quiet(&a, &mut on_a).await;
    heard_until_quiet(&b, &mut on_b).await;

    // Both buses reconnect and both rooms are diffed, but only once every instance has
    // written its users back: nobody was gone, so nobody is announced.
    redis.restart().await;
    until_present(&a, &alice, &project, &["alice", "bob"]).await;
    until_present(&b, &alice, &project, &["alice", "bob"]).await;
    // Past the repair's two ticks (0.5 s each) with room to spare.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(heard_until_quiet(&a, &mut on_a).await, vec![]);
    assert_eq!(heard_until_quiet(&b, &mut on_b).await, vec![]);
}
