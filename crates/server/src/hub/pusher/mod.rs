//! The Pusher Channels protocol (version 7) onto the hub: the WebSocket at `/app/{key}`
//! (`conn.rs`) and the HTTP API at `/apps/{id}/...` (`api.rs`), for the apps configured in
//! `[[pusher.apps]]` (docs/compat.md).
//!
//! Mapping: Pusher channel `C` of app `ID` is hub channel `pusher-ID:C` (a namespace per app, so
//! apps never see each other's channels); an event is a hub publication whose data is the
//! event's data string and whose tags carry the event name (`event`), the socket that sent it
//! (`socket_id`, which never receives it back) and, for client events on presence channels,
//! the sender's `user_id`. A publication made through switchboard's own API to `pusher-ID:C`
//! reaches Pusher clients as event `tags.event` (default `message`).

mod api;
mod conn;

use std::collections::HashMap;
use std::sync::Arc;

use axum::routing::{any, get, post};
use axum::Router;

use super::ctx::Ctx;
use crate::config::PusherApp;
pub(crate) use crate::sign::{hex, hex_hmac, same};

/// One configured app, as the adapters use it.
pub(crate) struct App {
    pub config: PusherApp,
    /// Its hub namespace, `pusher-ID`.
    pub namespace: String,
}

impl App {
    /// The hub channel of Pusher channel `channel`.
    pub fn hub_channel(&self, channel: &str) -> String {
        format!("{}:{channel}", self.namespace)
    }

    /// The Pusher channel of a hub channel of this app.
    pub fn pusher_channel<'a>(&self, hub_channel: &'a str) -> Option<&'a str> {
        hub_channel
            .strip_prefix(self.namespace.as_str())
            .and_then(|r| r.strip_prefix(':'))
    }

    /// The hub user of a Pusher user id (users are the app's own: `pusher-ID/USER`).
    pub fn hub_user(&self, user_id: &str) -> String {
        format!("{}/{user_id}", self.namespace)
    }

    /// The Pusher user id of a hub user of this app.
    pub fn pusher_user<'a>(&self, hub_user: &'a str) -> Option<&'a str> {
        hub_user
            .strip_prefix(self.namespace.as_str())
            .and_then(|r| r.strip_prefix('/'))
    }

    /// HMAC-SHA256 of `message` with the app secret, as lower-case hex.
    pub fn sign(&self, message: &str) -> String {
        hex_hmac(self.config.secret.as_bytes(), message.as_bytes())
    }
}

/// What the Pusher adapters share.
pub(crate) struct PusherCtx {
    pub hub: Ctx,
    pub by_key: HashMap<String, Arc<App>>,
    pub by_id: HashMap<String, Arc<App>>,
    /// Member and client-event webhooks (channel occupancy comes from the hub's observer).
    pub webhooks: Option<Arc<crate::webhooks::Webhooks>>,
}

impl PusherCtx {
    /// Queues a webhook event of `app`, when it has webhooks.
    pub fn webhook(&self, app: &App, event: serde_json::Value) {
        if let Some(w) = &self.webhooks {
            w.emit(
                &crate::webhooks::Audience::Pusher(app.config.id.clone()),
                event,
            );
        }
    }
}

/// The routes, when any app is configured.
pub(crate) fn routes(
    hub: Ctx,
    apps: &[PusherApp],
    webhooks: Option<Arc<crate::webhooks::Webhooks>>,
) -> Option<Router> {
    if apps.is_empty() {
        return None;
    }
    let mut by_key = HashMap::new();
    let mut by_id = HashMap::new();
    for a in apps {
        let app = Arc::new(App {
            config: a.clone(),
            namespace: a.namespace(),
        });
        by_key.insert(a.key.clone(), app.clone());
        by_id.insert(a.id.clone(), app);
    }
    let ctx = Arc::new(PusherCtx {
        hub,
        by_key,
        by_id,
        webhooks,
    });
    Some(
        Router::new()
            .route("/app/{key}", any(conn::handler))
            .route("/apps/{id}/events", post(api::events))
            .route("/apps/{id}/batch_events", post(api::batch_events))
            .route("/apps/{id}/channels", get(api::channels))
            .route("/apps/{id}/channels/{name}", get(api::channel))
            .route("/apps/{id}/channels/{name}/users", get(api::users))
            .route(
                "/apps/{id}/users/{user}/terminate_connections",
                post(api::terminate),
            )
            .with_state(ctx),
    )
}

/// Pusher channel names: 1–164 bytes of `[A-Za-z0-9_\-=@,.;]`.
pub(crate) fn valid_channel(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 164
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-=@,.;".contains(&b))
}

/// Channels that need a signed authorization to subscribe.
pub(crate) fn is_private(channel: &str) -> bool {
    channel.starts_with("private-") || channel.starts_with("presence-")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_match_pushers_examples() {
        // Pusher's documented example (channel authorization): key 278d425bdf160c739803,
        // secret 7ad3773142a6692b25b8, socket 1234.1234, channel private-foobar.
        let sig = hex_hmac(b"7ad3773142a6692b25b8", b"1234.1234:private-foobar");
        assert_eq!(
            sig,
            "58df8b0c36d6982b82c3ecf6b4662e34fe8c25bba48f5369f135bf843651c3a4"
        );
        assert!(same("abc", "abc"));
        assert!(!same("abc", "abd"));
        assert!(!same("abc", "ab"));
    }

    #[test]
    fn channel_names() {
        assert!(valid_channel("private-a_b-c=d@e,f.g;h"));
        assert!(!valid_channel(""));
        assert!(!valid_channel("a b"));
        assert!(!valid_channel("a:b"));
        assert!(!valid_channel(&"x".repeat(165)));
        assert!(is_private("presence-x") && is_private("private-x") && !is_private("x"));
    }
}
