//! The cluster: which broker the hub uses (in memory alone, Redis for several nodes) and the
//! Redis connection's health in the log.

use std::sync::Arc;

use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::config::Settings;
use crate::ServerError;

/// The hub on the broker the settings name: the memory broker, or Redis (`--redis`) with its
/// health watched until shutdown.
pub(crate) async fn start_hub(
    settings: &Settings,
    rx: &watch::Receiver<bool>,
    tasks: &mut JoinSet<()>,
) -> Result<switchboard_hub::Hub, ServerError> {
    let hub = match &settings.cluster.redis {
        None => switchboard_hub::Hub::with_memory_broker(hub_config(settings))
            .map_err(|e| ServerError::Hub(e.to_string()))?,
        Some(url) => {
            let mut config = switchboard_hub::RedisConfig::new(url.clone());
            if let Some(prefix) = &settings.cluster.redis_prefix {
                config.prefix = prefix.clone();
            }
            if let Some(ca) = &settings.cluster.redis_ca {
                let pem = std::fs::read(ca)
                    .map_err(|e| ServerError::Hub(format!("--redis-ca {}: {e}", ca.display())))?;
                config.ca_pem = Some(pem);
            }
            let broker = switchboard_hub::RedisBroker::connect(config)
                .await
                .map_err(|e| ServerError::Hub(format!("--redis {}: {e}", redact_url(url))))?;
            tasks.spawn(watch_redis(broker.health_changes(), rx.clone()));
            let clock: Arc<dyn switchboard_hub::Clock> = Arc::new(switchboard_hub::SystemClock);
            switchboard_hub::Hub::new(hub_config(settings), broker, clock)
                .map_err(|e| ServerError::Hub(e.to_string()))?
        }
    };
    Ok(hub)
}

/// A Redis URL without its password, for messages.
pub(crate) fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}://***@{}", &url[..scheme], &url[at + 1..])
        }
        _ => url.to_owned(),
    }
}

/// Logs every change of the Redis connection's health.
async fn watch_redis(
    mut health: watch::Receiver<switchboard_hub::RedisHealth>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            changed = health.changed() => {
                if changed.is_err() {
                    return;
                }
                let h = health.borrow_and_update().clone();
                if h.up {
                    tracing::info!(outages = h.outages, "Redis reachable: cluster broker up");
                } else {
                    tracing::warn!(
                        error = h.last_error.as_deref().unwrap_or(""),
                        pubsub = h.pubsub,
                        commands = h.commands,
                        "Redis unreachable: publishes are refused (100, temporary) until it is back"
                    );
                }
            }
            _ = stop.changed() => return,
        }
    }
}

/// The hub's configuration: the settings' own, plus a namespace per Pusher app holding its
/// channels (presence and join/leave on, no history: Pusher has none; subscriptions are
/// authorized by the Pusher adapter, which gives its sessions that namespace only).
pub(crate) fn hub_config(settings: &Settings) -> switchboard_hub::HubConfig {
    let mut config = settings.hub.clone();
    for app in &settings.pusher.apps {
        config.namespaces.entry(app.namespace()).or_insert_with(|| {
            switchboard_hub::NamespaceOptions {
                presence: true,
                join_leave: true,
                allow_publish_for_subscriber: true,
                allow_presence_for_subscriber: true,
                ..Default::default()
            }
        });
    }
    config
}
