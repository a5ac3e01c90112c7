use std::time::Duration;

use super::*;

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| x.to_string()).collect()
}

#[test]
fn default_file_is_the_defaults() {
    let text = default_toml();
    assert_eq!(Settings::from_toml(&text).unwrap(), Settings::default());
    // Every setting appears in it, with its flag and variable unless it is file-only.
    for spec in table() {
        let (_, key) = spec.section_and_key();
        assert!(text.contains(&format!("{key} = ")), "{key} missing");
        if spec.cli {
            assert!(text.contains(&format!("--{} ", spec.name)), "{}", spec.name);
            assert!(text.contains(&spec.env()), "{}", spec.env());
        }
    }
}

#[test]
fn names_keys_and_variables_are_unique() {
    let mut names = std::collections::BTreeSet::new();
    let mut keys = std::collections::BTreeSet::new();
    for spec in table() {
        assert!(names.insert(spec.name), "name {} twice", spec.name);
        assert!(keys.insert(spec.toml), "key {} twice", spec.toml);
        assert!(
            spec.name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'),
            "{}",
            spec.name
        );
        assert!(
            SECTIONS.iter().any(|(s, _)| *s == spec.section_and_key().0),
            "{} is in no section",
            spec.toml
        );
        assert!(
            spec.help.ends_with('.'),
            "{}: help is a sentence",
            spec.name
        );
        assert!(
            spec.default.is_some()
                || spec.example.is_some()
                || spec.get(&Settings::default()).is_some()
                || spec.name.contains("pem")
                || spec.name == "jwks-json",
            "{}: no default and no example",
            spec.name
        );
    }
}

#[test]
fn bounds_refuse_or_clamp() {
    let mut st = Settings::default();
    let e = st
        .set("hub-ping-interval", &s(&["0"]), "--hub-ping-interval")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("--hub-ping-interval") && e.contains("at least 1"),
        "{e}"
    );
    st.set("credential-ttl", &s(&["7"]), "--credential-ttl")
        .unwrap();
    assert_eq!(st.turn.credential_ttl, Duration::from_secs(60));
    st.set("max-lifetime", &s(&["60"]), "--max-lifetime")
        .unwrap();
    assert_eq!(st.turn.max_lifetime, Duration::from_secs(600));
    let e = st
        .set("alt-port", &s(&["99999"]), "--alt-port")
        .unwrap_err()
        .to_string();
    assert!(e.contains("out of range"), "{e}");
    let e = Settings::from_toml("[http3]\nmax_uni_streams = 2\n").unwrap_err();
    assert!(
        e.contains("http3.max_uni_streams") && e.contains("at least 3"),
        "{e}"
    );
}

#[test]
fn values_are_typed_once() {
    let st = Settings::from_toml(
        "[turn]\nrealm = \"r\"\nusers = [\"alice:pa,ss\", \"bob:0x000102030405060708090a0b0c0d0e0f\"]\nallow_peers = [\"127.0.0.0/8\"]\nrelay_ports = \"50000-50100\"\n",
    )
    .unwrap();
    assert_eq!(st.turn.users.len(), 2);
    assert_eq!(st.turn.users[0].to_string(), "alice:pa,ss");
    assert_eq!(st.turn.allow_peers[0].to_string(), "127.0.0.0/8");
    assert_eq!(
        st.turn.relay_ports,
        PortRange {
            low: 50000,
            high: 50100
        }
    );
    let e = Settings::from_toml("[turn]\nusers = [\"nocolon\"]\n").unwrap_err();
    assert!(e.contains("turn.users"), "{e}");
    let e = Settings::from_toml("[turn]\nallow_peers = [\"10.0.0.0/99\"]\n").unwrap_err();
    assert!(e.contains("turn.allow_peers"), "{e}");
    let e = Settings::from_toml("[turn]\nrelay_ports = \"9-1\"\n").unwrap_err();
    assert!(e.contains("turn.relay_ports"), "{e}");
}

#[test]
fn show_redacts_secrets_unless_revealed() {
    let mut st = Settings::default();
    st.set("api-key", &s(&["k1"]), "--api-key").unwrap();
    st.set("turn-user", &s(&["alice:hunter2"]), "--turn-user")
        .unwrap();
    st.set("turn-secret", &s(&["s3cret"]), "--turn-secret")
        .unwrap();
    st.set("jwt-hmac-secret", &s(&["hs"]), "--jwt-hmac-secret")
        .unwrap();
    st.set("redis", &s(&["redis://u:pw@10.0.0.5:6379/0"]), "--redis")
        .unwrap();
    let shown = st.to_toml(false);
    for secret in ["k1", "hunter2", "s3cret", "\"hs\"", ":pw@"] {
        assert!(!shown.contains(secret), "{secret} shown:\n{shown}");
    }
    assert!(
        shown.contains("alice:<redacted>")
            && shown.contains("redis://u:<redacted>@10.0.0.5:6379/0"),
        "{shown}"
    );
    let revealed = st.to_toml(true);
    assert!(
        revealed.contains("hunter2") && revealed.contains(":pw@"),
        "{revealed}"
    );
    assert_eq!(Settings::from_toml(&revealed).unwrap(), st);
}

#[test]
fn every_key_is_settable() {
    for key in table().iter().filter(|s| s.cli).map(|s| s.name) {
        let mut st = Settings::default();
        let value = match key {
            "log-format" => "json",
            "stun-udp" | "stun-tcp" | "stun-tls" | "http" | "https" | "listen" | "admin" => {
                "127.0.0.1:1"
            }
            // Switches whose default is on.
            "access-log" | "allow-loopback-origins" => "false",
            "public-admin" | "api-admin-only" => "true",
            "webhook" => "https://app.example.com/hooks",
            "allow-anonymous" => "false",
            "hub-ping-interval" | "hub-idle-timeout" | "poll-timeout" => "7",
            "allow-origin" => "https://app.example.com",
            "hub-history-memory" => "7",
            "alt-address" => "127.0.0.2",
            "max-lifetime" => "7000",
            "credential-ttl" => "7000",
            "http3-max-uni-streams" => "5",
            "alternate-server" => "203.0.113.2:3478",
            "relay-ports" => "50000-50100",
            "relay-ip" | "external-ip" => "203.0.113.9",
            "turn-user" => "alice:pw",
            "allow-peer" | "deny-peer" => "10.0.0.0/8",
            "http3" => "off",
            "quic-retry" => "on",
            _ if find(key).is_some_and(|s| {
                s.range.is_some()
                    || s.expects.contains("whole")
                    || s.expects.contains("MiB")
                    || s.expects.contains("milli")
            }) =>
            {
                "7"
            }
            _ => "x",
        };
        st.set(key, &s(&[value]), key)
            .unwrap_or_else(|e| panic!("{key}={value}: {e}"));
        assert_ne!(st, Settings::default(), "{key} changed nothing");
    }
}

#[test]
fn file_then_env_then_flags() {
    let mut st =
        Settings::from_toml("[stun]\nudp = [\"127.0.0.1:4000\"]\ntcp = \"off\"\n").unwrap();
    assert_eq!(st.stun.udp.0, vec!["127.0.0.1:4000".parse().unwrap()]);
    assert!(st.stun.tcp.is_off());
    st.apply_env([
        (
            "SWITCHBOARD_STUN_UDP".to_string(),
            "127.0.0.1:5000,127.0.0.1:5002".to_string(),
        ),
        ("HOME".to_string(), "/root".to_string()),
        ("SWITCHBOARD_CONFIG".to_string(), "/x.toml".to_string()),
    ])
    .unwrap();
    assert_eq!(st.stun.udp.0.len(), 2);
    st.set("stun-udp", &s(&["off"]), "--stun-udp").unwrap();
    assert!(st.stun.udp.is_off());
}

#[test]
fn unknown_keys_are_named() {
    let e = Settings::from_toml("[stun]\nupd = \"127.0.0.1:1\"\n").unwrap_err();
    assert!(e.contains("upd"), "{e}");
    let e = Settings::from_toml("colour = 1\n").unwrap_err();
    assert!(e.contains("colour"), "{e}");
    // Unknown variables are returned (to be warned about), not applied and not fatal.
    let mut st = Settings::default();
    let unknown = st
        .apply_env([
            ("SWITCHBOARD_STUN_UPD".to_string(), "x".to_string()),
            (
                "SWITCHBOARD_PORT".to_string(),
                "tcp://10.0.0.1:80".to_string(),
            ),
            ("SWITCHBOARD_SOFTWARE".to_string(), "env".to_string()),
        ])
        .unwrap();
    assert_eq!(unknown, ["SWITCHBOARD_PORT", "SWITCHBOARD_STUN_UPD"]);
    assert_eq!(st.stun.software, "env");
}

#[test]
fn bad_values_are_named() {
    let e = Settings::from_toml("[stun]\nudp = \"localhost\"\n").unwrap_err();
    assert!(e.contains("localhost"), "{e}");
    let e = Settings::default()
        .set("alt-port", &s(&["70000"]), "--alt-port")
        .unwrap_err();
    assert!(
        e.to_string().contains("--alt-port") && e.to_string().contains("70000"),
        "{e}"
    );
    let e = Settings::default()
        .set("stun-udp", &s(&["off", "127.0.0.1:1"]), "--stun-udp")
        .unwrap_err();
    assert!(e.to_string().contains("--stun-udp"), "{e}");
    let e = Settings::default()
        .set("log-format", &s(&["xml"]), "--log-format")
        .unwrap_err();
    assert!(e.to_string().contains("xml"), "{e}");
}

#[test]
fn hub_tables_merge_onto_the_defaults() {
    let st = Settings::from_toml(
        "[hub]\nallow_anonymous = false\n[hub.default_namespace]\nallow_publish_for_anonymous = false\n[hub.namespaces.chat]\npresence = true\n",
    )
    .unwrap();
    assert!(!st.hub.allow_anonymous);
    let ns = &st.hub.default_namespace;
    assert!(!ns.allow_publish_for_anonymous);
    assert!(ns.allow_subscribe_for_anonymous && ns.history_size == 100);
    assert!(st.hub.namespaces["chat"].presence);
    assert!(!st.hub.namespaces["chat"].allow_subscribe_for_client);
    let e = Settings::from_toml("[hub.limits]\nmax_mesage_size = 1\n").unwrap_err();
    assert!(e.contains("max_mesage_size"), "{e}");
    let e = Settings::from_toml("[hub.default_namespace]\nhistory_size = 0\n").unwrap();
    assert!(e.validate().is_err());
}

#[test]
fn allow_anonymous_values() {
    let mut st = Settings::default();
    assert!(st.hub.allow_anonymous && st.http.anonymous_loopback_only);
    st.set("allow-anonymous", &s(&["true"]), "--allow-anonymous")
        .unwrap();
    assert!(st.hub.allow_anonymous && !st.http.anonymous_loopback_only);
    st.set("allow-anonymous", &s(&["false"]), "--allow-anonymous")
        .unwrap();
    assert!(!st.hub.allow_anonymous);
    assert!(st
        .set("allow-anonymous", &s(&["maybe"]), "--allow-anonymous")
        .is_err());
}

#[test]
fn validation() {
    let mut st = Settings::default();
    st.validate().unwrap();
    st.stun.alt_address = Some("127.0.0.2".parse().unwrap());
    st.validate().unwrap();
    st.stun.alt_address = Some("::1".parse().unwrap());
    assert!(st.validate().is_err());
    st.stun.alt_address = Some("127.0.0.1".parse().unwrap());
    assert!(st.validate().is_err());
    st.stun.alt_address = None;
    st.stun.alt_port = Some(4000);
    assert!(st.validate().is_err());
    let mut st = Settings::default();
    st.tls.cert = Some("/c.pem".into());
    assert!(st.validate().is_err());
}

#[test]
fn alternate_servers() {
    let mut st = Settings::default();
    st.set(
        "alternate-server",
        &s(&["203.0.113.2:3478", "[2001:db8::2]:3478"]),
        "--alternate-server",
    )
    .unwrap();
    assert_eq!(st.turn.alternate_servers.len(), 2);
    // Redirects need a limit to trigger them.
    let e = st.validate().unwrap_err().to_string();
    assert!(e.contains("--total-quota"), "{e}");
    st.turn.total_quota = 100;
    st.validate().unwrap();
    st.set(
        "alternate-domain",
        &s(&["turn.example.org"]),
        "--alternate-domain",
    )
    .unwrap();
    st.validate().unwrap();
    st.set("alternate-domain", &s(&["bad name"]), "--alternate-domain")
        .unwrap();
    assert!(st.validate().is_err());
    // The environment uses commas; `off` clears a list from the file.
    st.apply_env([(
        "SWITCHBOARD_ALTERNATE_SERVER".to_string(),
        "203.0.113.3:3478,203.0.113.4:3478".to_string(),
    )])
    .unwrap();
    assert_eq!(st.turn.alternate_servers[1].to_string(), "203.0.113.4:3478");
    st.set("alternate-server", &s(&["off"]), "--alternate-server")
        .unwrap();
    assert!(st.turn.alternate_servers.is_empty());
    let e = st
        .set(
            "alternate-server",
            &s(&["turn.example.org"]),
            "--alternate-server",
        )
        .unwrap_err();
    assert!(e.to_string().contains("--alternate-server"), "{e}");
    let mut st = Settings::from_toml(
        "[turn]\ntotal_quota = 1\nalternate_servers = [\"203.0.113.2:3478\"]\n",
    )
    .unwrap();
    st.validate().unwrap();
    st.turn.alternate_servers = vec!["0.0.0.0:3478".parse().unwrap()];
    assert!(st.validate().is_err());
}
