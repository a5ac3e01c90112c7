//! The hub config deserializes from TOML under `[hub]` with defaults, rejects unknown fields,
//! and is validated.

use switchboard_hub::{Hub, HubConfig};

#[derive(serde::Deserialize)]
struct Settings {
    hub: HubConfig,
}

#[test]
fn toml_with_defaults() {
    let s: Settings = toml::from_str(
        r#"
        [hub]
        allow_anonymous = true
        [hub.default_namespace]
        allow_subscribe_for_client = true
        [hub.namespaces.chat]
        history_size = 100
        history_ttl_secs = 300
        presence = true
        [hub.limits]
        max_connections_per_user = 5
        [hub.jwt]
        hmac_secret = "s"
        "#,
    )
    .unwrap();
    let c = s.hub;
    assert!(c.allow_anonymous && c.default_namespace.allow_subscribe_for_client);
    assert_eq!(c.namespaces["chat"].history_size, 100);
    assert!(c.namespaces["chat"].history_enabled());
    assert_eq!(c.limits.max_connections_per_user, 5);
    assert_eq!(c.limits.max_message_size, 65536);
    assert_eq!(c.presence_ttl_secs, 60);
    assert!(Hub::with_memory_broker(c).is_ok());
    let empty: Settings = toml::from_str("[hub]").unwrap();
    assert_eq!(empty.hub, HubConfig::default());
}

#[test]
fn unknown_fields_are_rejected() {
    for bad in [
        "[hub]\nallow_anonymus = true",
        "[hub.namespaces.chat]\nhistory = 1",
        "[hub.limits]\nmax_msg = 1",
        "[hub.jwt]\nsecret = \"x\"",
    ] {
        assert!(toml::from_str::<Settings>(bad).is_err(), "{bad}");
    }
}

#[test]
fn invalid_configs_are_rejected() {
    let mut c = HubConfig::default();
    c.namespaces.insert("bad name".into(), Default::default());
    assert!(Hub::with_memory_broker(c).is_err());
    let mut c = HubConfig::default();
    c.namespaces.insert(
        "chat".into(),
        switchboard_hub::NamespaceOptions {
            history_size: 5,
            ..Default::default()
        },
    );
    assert!(Hub::with_memory_broker(c).is_err());
    let mut c = HubConfig::default();
    c.limits.queue_max_messages = 0;
    assert!(Hub::with_memory_broker(c).is_err());
}
