//! The HTTP transports driven through the router (no sockets): long-poll waits and cursors,
//! SSE event ids, request limits.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::ConnectInfo;
use axum::http::{header, Request, StatusCode};
use axum::response::Response;
use axum::Router;
use futures_util::StreamExt;
use switchboard_hub::{proto, Hub, NamespaceOptions};
use tokio::sync::watch;
use tower::ServiceExt;

use super::ctx::HubCtx;
use super::params::channels_param;
use super::routes::routes;
use crate::config::Settings;

struct Fixture {
    router: Router,
    hub: Hub,
    _stop: watch::Sender<bool>,
}

fn fixture(settings: Settings) -> Fixture {
    let hub = Hub::with_memory_broker(settings.hub.clone()).expect("valid hub config");
    let (stop, rx) = watch::channel(false);
    let ctx = HubCtx::new(hub.clone(), &settings, rx);
    Fixture {
        router: routes(ctx, None),
        hub,
        _stop: stop,
    }
}

fn loopback() -> ConnectInfo<SocketAddr> {
    ConnectInfo(SocketAddr::from(([127, 0, 0, 1], 40000)))
}

async fn send(router: &Router, request: Request<Body>) -> Response {
    router.clone().oneshot(request).await.expect("infallible")
}

async fn get(router: &Router, uri: &str, headers: &[(&str, &str)]) -> Response {
    let mut request = Request::get(uri).extension(loopback());
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    send(router, request.body(Body::empty()).unwrap()).await
}

async fn json_body(response: Response) -> serde_json::Value {
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{e}: {bytes:?}"))
}

/// SSE events as (id, data) until `n` data events were read.
async fn sse_events(response: Response, n: usize) -> Vec<(Option<String>, serde_json::Value)> {
    let mut stream = response.into_body().into_data_stream();
    let mut text = String::new();
    let mut events = Vec::new();
    while events.len() < n {
        let chunk: Bytes = tokio::time::timeout(Duration::from_secs(5), stream.next())
            .await
            .expect("an SSE event in time")
            .expect("stream open")
            .unwrap();
        text.push_str(std::str::from_utf8(&chunk).unwrap());
        while let Some(end) = text.find("\n\n") {
            let block: String = text.drain(..end + 2).collect();
            let mut id = None;
            let mut data = None;
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("id: ") {
                    id = Some(v.to_owned());
                } else if let Some(v) = line.strip_prefix("data: ") {
                    data = Some(serde_json::from_str(v).unwrap());
                }
            }
            if let Some(data) = data {
                events.push((id, data));
            }
        }
    }
    events
}

async fn publish(hub: &Hub, channel: &str, n: u32) {
    hub.publish(
        channel,
        format!("{{\"n\":{n}}}").into_bytes(),
        Default::default(),
    )
    .await
    .expect("publish");
}

#[tokio::test]
async fn poll_timeout_beyond_duration_range_is_capped_not_a_panic() {
    let mut settings = Settings::default();
    settings.http.poll_timeout = std::time::Duration::from_secs(1);
    let f = fixture(settings);
    let started = Instant::now();
    let r = get(&f.router, "/v1/poll?channel=news&timeout=1e300", &[]).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert!(started.elapsed() < Duration::from_secs(5));
    let r = get(&f.router, "/v1/poll?channel=news&timeout=-1", &[]).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(json_body(r).await["error"]["code"], 107);
}

#[tokio::test]
async fn poll_keeps_waiting_through_join_and_leave() {
    let mut settings = Settings::default();
    settings.hub.namespaces.insert(
        "room".into(),
        NamespaceOptions {
            history_size: 10,
            history_ttl_secs: 60,
            presence: true,
            join_leave: true,
            allow_subscribe_for_client: true,
            allow_subscribe_for_anonymous: true,
            ..Default::default()
        },
    );
    let f = fixture(settings);
    let router = f.router.clone();
    let poll = tokio::spawn(async move {
        json_body(get(&router, "/v1/poll?channel=room:a&timeout=10", &[]).await).await
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Another client joins (and leaves): no publication, so the poll keeps waiting.
    let other = f
        .hub
        .connect(&proto::ConnectRequest::default(), "test")
        .unwrap();
    other.subscribe("room:a", None).await.unwrap();
    other.close().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!poll.is_finished(), "a join/leave ended the poll early");
    publish(&f.hub, "room:a", 1).await;
    let body = tokio::time::timeout(Duration::from_secs(5), poll)
        .await
        .unwrap()
        .unwrap();
    let pubs = body["publications"].as_array().unwrap();
    assert_eq!(pubs.len(), 1, "{body}");
    assert_eq!(pubs[0]["data"]["n"], 1);
}

#[tokio::test]
async fn poll_answers_at_once_when_recovery_is_impossible() {
    let f = fixture(Settings::default());
    publish(&f.hub, "news", 1).await;
    let started = Instant::now();
    let r = get(
        &f.router,
        "/v1/poll?channel=news&since=0.oldepoch&timeout=5",
        &[],
    )
    .await;
    assert_eq!(r.status(), StatusCode::OK);
    let body = json_body(r).await;
    assert_eq!(body["recovered"], false, "{body}");
    assert!(body["cursor"].as_str().unwrap().starts_with("1."), "{body}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "waited {:?} before reporting the lost position",
        started.elapsed()
    );
}

#[tokio::test]
async fn sse_resumes_from_the_subscribe_reply_when_nothing_was_published_yet() {
    let f = fixture(Settings::default());
    publish(&f.hub, "news", 1).await;
    let r = get(&f.router, "/v1/sse?channel=news&channel=other", &[]).await;
    assert_eq!(r.status(), StatusCode::OK);
    let events = sse_events(r, 3).await; // connect reply, two subscribe replies
    let last_id = events[2]
        .0
        .clone()
        .expect("the last subscribe reply carries an event id");
    assert!(last_id.starts_with("1."), "{last_id}");
    // The stream is cut before any publication; two are published meanwhile.
    publish(&f.hub, "news", 2).await;
    publish(&f.hub, "other", 3).await;
    let r = get(
        &f.router,
        "/v1/sse?channel=news&channel=other",
        &[("last-event-id", &last_id)],
    )
    .await;
    assert_eq!(r.status(), StatusCode::OK);
    let events = sse_events(r, 5).await;
    let subscribe = |i: usize| events[i].1["reply"]["subscribe"].clone();
    assert_eq!(subscribe(1)["recovered"], true, "{events:?}");
    assert_eq!(
        events[2].1["push"]["publication"]["data"]["n"], 2,
        "{events:?}"
    );
    assert_eq!(subscribe(3)["recovered"], true, "{events:?}");
    assert_eq!(
        events[4].1["push"]["publication"]["data"]["n"], 3,
        "{events:?}"
    );
}

/// The next chunk of an SSE body (one event each), within 5 s.
async fn next_chunk<S>(body: &mut S) -> Option<Bytes>
where
    S: futures_util::Stream<Item = Result<Bytes, axum::Error>> + Unpin,
{
    tokio::time::timeout(Duration::from_secs(5), body.next())
        .await
        .expect("a chunk or the end in time")
        .map(|c| c.unwrap())
}

/// Waits up to `limit` for `done`; whether it came.
async fn within(limit: Duration, done: impl Fn() -> bool) -> bool {
    let until = Instant::now() + limit;
    while !done() {
        if Instant::now() > until {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    true
}

#[tokio::test]
async fn sse_session_ends_as_soon_as_the_client_is_gone() {
    let f = fixture(Settings::default());
    let r = get(&f.router, "/v1/sse?channel=news", &[]).await;
    assert_eq!(r.status(), StatusCode::OK);
    let mut body = r.into_body().into_data_stream();
    next_chunk(&mut body).await.expect("the connect reply");
    next_chunk(&mut body).await.expect("the subscribe reply");
    assert_eq!(f.hub.connection_count(), 1);
    // hyper drops the body when the connection closes: the session ends then, not at the next
    // heartbeat or publication.
    drop(body);
    assert!(within(Duration::from_secs(2), || f.hub.connection_count() == 0).await);
}

#[tokio::test]
async fn sse_client_that_stops_reading_is_ended_after_the_write_timeout() {
    let mut settings = Settings::default();
    settings.http.idle_timeout = Duration::from_millis(300);
    let f = fixture(settings);
    let r = get(&f.router, "/v1/sse?channel=news", &[]).await;
    let mut body = r.into_body().into_data_stream();
    next_chunk(&mut body).await.expect("the connect reply");
    next_chunk(&mut body).await.expect("the subscribe reply");
    // Nothing is read any more: the stream queues 16 events, then waits for room.
    for n in 0..40 {
        publish(&f.hub, "news", n).await;
    }
    let started = Instant::now();
    assert!(within(Duration::from_secs(3), || f.hub.connection_count() == 0).await);
    assert!(
        started.elapsed() >= Duration::from_millis(200),
        "{:?}",
        started.elapsed()
    );
    // What was queued is still delivered, then the body ends.
    let mut queued = 0;
    while next_chunk(&mut body).await.is_some() {
        queued += 1;
    }
    assert_eq!(queued, 16);
}

#[tokio::test]
async fn client_publish_body_is_limited_like_a_websocket_message() {
    let f = fixture(Settings::default());
    let mut body = br#"{"channel":"news","data":{"n":1}}"#.to_vec();
    body.resize(body.len() + 300 * 1024, b' ');
    let request = Request::post("/v1/publish")
        .extension(loopback())
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body))
        .unwrap();
    let r = send(&f.router, request).await;
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(json_body(r).await["error"]["code"], 113);
}

#[test]
fn channel_parameters_are_bounded_by_the_channel_limit() {
    let pairs: Vec<(String, String)> = (0..20_000)
        .map(|i| ("channel".to_owned(), format!("c{i}")))
        .collect();
    let e = channels_param(&pairs, 128).unwrap_err();
    assert_eq!(e.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(e.error.code, 106);
    assert!(e.error.message.contains("128"), "{}", e.error.message);
    assert_eq!(channels_param(&pairs[..128], 128).unwrap().len(), 128);
    let twice = vec![
        ("channel".to_owned(), "a".to_owned()),
        ("channel".to_owned(), "a".to_owned()),
    ];
    assert_eq!(channels_param(&twice, 128).unwrap_err().error.code, 107);
}
