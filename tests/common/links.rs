//! Helpers for tests of server-to-server links (routes, leaf nodes) with
//! async-nats clients on either side.

use std::time::{Duration, Instant};

use futures::StreamExt;
use tokio::time::timeout;

/// How long a message or a piece of interest may take to cross.
pub const WAIT: Duration = Duration::from_secs(10);

/// The next message on `sub`, within [`WAIT`].
pub async fn next(sub: &mut async_nats::Subscriber) -> async_nats::Message {
    timeout(WAIT, sub.next())
        .await
        .expect("message in time")
        .expect("subscription open")
}

/// Waits until a message published at `from` on `subject` reaches `sub`
/// (the interest has crossed the link), then drains the probes.
pub async fn await_crossing(from: &async_nats::Client, sub: &mut async_nats::Subscriber, subject: &str) {
    let deadline = Instant::now() + WAIT;
    loop {
        from.publish(subject.to_string(), "probe".into()).await.unwrap();
        from.flush().await.unwrap();
        if let Ok(Some(_)) = timeout(Duration::from_millis(100), sub.next()).await {
            break;
        }
        assert!(Instant::now() < deadline, "interest on {subject} never crossed");
    }
    while let Ok(Some(_)) = timeout(Duration::from_millis(200), sub.next()).await {}
}

/// The answers to one request on `subject` from `client` (a `$SYS` PING,
/// which every server answers), gathered until none has come for `quiet`.
pub async fn answers(client: &async_nats::Client, subject: &str, quiet: Duration) -> Vec<serde_json::Value> {
    let inbox = client.new_inbox();
    let mut replies = client.subscribe(inbox.clone()).await.unwrap();
    client
        .publish_with_reply(subject.to_string(), inbox, "".into())
        .await
        .unwrap();
    client.flush().await.unwrap();
    let mut out = Vec::new();
    while let Ok(Some(m)) = timeout(quiet, replies.next()).await {
        out.push(serde_json::from_slice(&m.payload).unwrap());
    }
    out
}

/// Publishes `blocked` then `marker` from `from`, and checks that the
/// marker reaches `marker_sub` while `blocked_sub` gets nothing: messages
/// keep their order on one link, so had `blocked` crossed it would have
/// come first. `what` names the case in failures.
pub async fn blocked_then_marker(
    from: &async_nats::Client,
    blocked: &str,
    blocked_sub: &mut async_nats::Subscriber,
    marker: &str,
    marker_sub: &mut async_nats::Subscriber,
    what: &str,
) {
    from.publish(blocked.to_string(), "blocked".into()).await.unwrap();
    from.publish(marker.to_string(), "marker".into()).await.unwrap();
    from.flush().await.unwrap();
    loop {
        if next(marker_sub).await.payload == "marker" {
            break;
        }
    }
    assert!(
        timeout(Duration::from_millis(300), blocked_sub.next()).await.is_err(),
        "{what}: {blocked} crossed"
    );
}
