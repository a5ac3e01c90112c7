//! What a setting is: its [`Spec`] (names, heading, help, bounds) and the [`Access`] that reads
//! and writes its place in [`Settings`]. The settings themselves are listed in `table.rs`; the
//! value types they parse into are in `value.rs`.

use super::Settings;

/// The heading a setting is listed under in `serve --help` and the docs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Group {
    /// Listen addresses of every protocol.
    Listeners,
    /// Certificates.
    Tls,
    /// STUN behaviour.
    Stun,
    /// TURN relays and credentials.
    Turn,
    /// The real-time hub: access, tokens, limits, signaling rooms.
    Hub,
    /// The HTTP stack and HTTP/3.
    Http,
    /// Several nodes through Redis.
    Cluster,
    /// Logging.
    Logging,
}

impl Group {
    /// Every group, in help order.
    pub const ALL: [Group; 8] = [
        Group::Listeners,
        Group::Tls,
        Group::Stun,
        Group::Turn,
        Group::Hub,
        Group::Http,
        Group::Cluster,
        Group::Logging,
    ];

    /// The heading.
    pub fn heading(self) -> &'static str {
        match self {
            Group::Listeners => "Listeners",
            Group::Tls => "TLS",
            Group::Stun => "STUN",
            Group::Turn => "TURN",
            Group::Hub => "Hub",
            Group::Http => "HTTP",
            Group::Cluster => "Cluster",
            Group::Logging => "Logging",
        }
    }
}

/// Reads and writes one setting's place in [`Settings`].
pub(crate) trait Access: Send + Sync {
    /// Sets it from values (`from_toml`: they came from the TOML file).
    fn set(
        &self,
        s: &mut Settings,
        values: &[String],
        spec: &Spec,
        from_toml: bool,
    ) -> Result<(), String>;
    /// Its TOML value, `None` when unset.
    fn get(&self, s: &Settings) -> Option<toml::Value>;
}

/// One setting.
pub struct Spec {
    /// The name: flag `--NAME`, environment `SWITCHBOARD_NAME`.
    pub name: &'static str,
    /// The TOML key, dotted (`stun.udp`).
    pub toml: &'static str,
    /// The heading it is listed under.
    pub group: Group,
    /// What the value looks like in help (`ADDR`, `SECS`).
    pub value_name: &'static str,
    /// What it does (the first sentence is the short help).
    pub help: &'static str,
    /// What a valid value is, for error messages ("seconds", "a count").
    pub expects: &'static str,
    /// The default in flag syntax (lists comma-separated); `None`: unset.
    pub default: Option<&'static str>,
    /// For settings unset by default: an example value, TOML syntax, for `config default`.
    pub example: Option<&'static str>,
    /// A list: the flag repeats, the environment value is comma-separated, TOML takes an array.
    pub list: bool,
    /// A secret: `config show` redacts it.
    pub secret: bool,
    /// Also a flag and an environment variable (false: the TOML file only).
    pub cli: bool,
    /// The value of the flag given without one (`--quic-retry` alone means `on`).
    pub bare: Option<&'static str>,
    /// Inclusive bounds of a number.
    pub range: Option<(u64, u64)>,
    /// Out-of-range numbers are moved to the nearest bound instead of refused.
    pub clamp: bool,
    pub(crate) access: Box<dyn Access>,
}

impl Spec {
    pub(super) fn new(
        name: &'static str,
        toml: &'static str,
        group: Group,
        value_name: &'static str,
        help: &'static str,
        access: Box<dyn Access>,
    ) -> Spec {
        Spec {
            name,
            toml,
            group,
            value_name,
            help,
            expects: "a value",
            default: None,
            example: None,
            list: false,
            secret: false,
            cli: true,
            bare: None,
            range: None,
            clamp: false,
            access,
        }
    }
    pub(super) fn default(mut self, v: &'static str) -> Self {
        self.default = Some(v);
        self
    }
    pub(super) fn example(mut self, v: &'static str) -> Self {
        self.example = Some(v);
        self
    }
    pub(super) fn list(mut self) -> Self {
        self.list = true;
        self.default.get_or_insert("");
        self
    }
    pub(super) fn secret(mut self) -> Self {
        self.secret = true;
        self
    }
    pub(super) fn bare(mut self, v: &'static str) -> Self {
        self.bare = Some(v);
        self
    }
    pub(super) fn toml_only(mut self) -> Self {
        self.cli = false;
        self
    }
    pub(super) fn expects(mut self, what: &'static str) -> Self {
        self.expects = what;
        self
    }
    /// At least `lo` (refused below).
    pub(super) fn min(mut self, lo: u64) -> Self {
        self.range = Some((lo, u64::MAX));
        self
    }
    /// Between `lo` and `hi` (refused outside).
    pub(super) fn range(mut self, lo: u64, hi: u64) -> Self {
        self.range = Some((lo, hi));
        self
    }
    /// At least `lo`: smaller values are raised to it.
    pub(super) fn clamp_min(mut self, lo: u64) -> Self {
        self.range = Some((lo, u64::MAX));
        self.clamp = true;
        self
    }
    pub(super) fn secs(self) -> Self {
        self.expects("whole seconds")
    }
    pub(super) fn count(self) -> Self {
        self.expects("a whole number")
    }

    /// The environment variable.
    pub fn env(&self) -> String {
        format!(
            "SWITCHBOARD_{}",
            self.name.to_ascii_uppercase().replace('-', "_")
        )
    }

    /// The first sentence of the help.
    pub fn short_help(&self) -> &'static str {
        match self.help.find(". ") {
            Some(i) => &self.help[..=i],
            None => self.help,
        }
    }

    /// The TOML section (`stun`, `hub.limits`; empty for top-level keys) and the key.
    pub fn section_and_key(&self) -> (&'static str, &'static str) {
        match self.toml.rsplit_once('.') {
            Some((section, key)) => (section, key),
            None => ("", self.toml),
        }
    }

    /// Sets the setting on `s` from flag or environment values.
    pub fn set(&self, s: &mut Settings, values: &[String]) -> Result<(), String> {
        self.access.set(s, values, self, false)
    }

    /// The setting's value on `s` (TOML), `None` when unset.
    pub fn get(&self, s: &Settings) -> Option<toml::Value> {
        self.access.get(s)
    }
}
