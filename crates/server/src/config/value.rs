//! The value types of settings. Each parses once, from the strings of a flag, an environment
//! variable, a TOML value or the table's default, applying the setting's bounds, and renders
//! back to TOML for `config show` and `config default`.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use switchboard_turn::auth::UserEntry;
use switchboard_turn::peer_filter::Cidr;

use super::spec::Spec;

/// A settings value type.
pub(crate) trait Field: Sized {
    /// Parses the values given for the setting (one for a scalar, any number for a list).
    fn parse(values: &[String], spec: &Spec) -> Result<Self, String>;
    /// The TOML form; `None` for an unset optional value.
    fn to_toml(&self) -> Option<toml::Value>;
}

/// The single value of a scalar setting.
fn one<'a>(values: &'a [String], spec: &Spec) -> Result<&'a str, String> {
    match values {
        [v] => Ok(v.trim()),
        [] => Err(format!("expected {}, got nothing", spec.expects)),
        _ => Err(format!(
            "expected one value ({}), got {}",
            spec.expects,
            values.len()
        )),
    }
}

/// Applies the setting's range: out-of-range values are an error, or raised/lowered to the
/// bound where the table says the setting is clamped.
fn bounded(n: u64, spec: &Spec) -> Result<u64, String> {
    let Some((lo, hi)) = spec.range else {
        return Ok(n);
    };
    if spec.clamp {
        return Ok(n.clamp(lo, hi));
    }
    if n < lo || n > hi {
        return Err(if hi == u64::MAX {
            format!("{n} is out of range: at least {lo}")
        } else {
            format!("{n} is out of range {lo}-{hi}")
        });
    }
    Ok(n)
}

fn number(values: &[String], spec: &Spec, max: u64) -> Result<u64, String> {
    let v = one(values, spec)?;
    let (lo, hi) = match spec.range {
        Some((lo, hi)) => (lo, hi.min(max)),
        None => (0, max),
    };
    let out_of_range = || format!("{v} is out of range {lo}-{hi}");
    let n: u64 = v.parse().map_err(|_| {
        if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) {
            out_of_range()
        } else {
            format!("expected {}, got {v:?}", spec.expects)
        }
    })?;
    if n > max {
        return Err(out_of_range());
    }
    bounded(n, spec)
}

macro_rules! unsigned {
    ($($t:ty),*) => {$(
        impl Field for $t {
            fn parse(values: &[String], spec: &Spec) -> Result<Self, String> {
                let n = number(values, spec, <$t>::MAX as u64)?;
                <$t>::try_from(n).map_err(|_| format!("{n} is out of range"))
            }
            fn to_toml(&self) -> Option<toml::Value> {
                Some(toml::Value::Integer(i64::try_from(*self).unwrap_or(i64::MAX)))
            }
        }
    )*};
}
unsigned!(u16, u32, u64, usize);

/// Whole seconds.
impl Field for Duration {
    fn parse(values: &[String], spec: &Spec) -> Result<Self, String> {
        number(values, spec, u32::MAX as u64).map(Duration::from_secs)
    }
    fn to_toml(&self) -> Option<toml::Value> {
        Some(toml::Value::Integer(
            i64::try_from(self.as_secs()).unwrap_or(i64::MAX),
        ))
    }
}

/// `on`/`off`, `true`/`false`, `yes`/`no`, `1`/`0`.
pub(crate) fn switch(v: &str) -> Option<bool> {
    match v.to_ascii_lowercase().as_str() {
        "on" | "true" | "yes" | "1" => Some(true),
        "off" | "false" | "no" | "0" => Some(false),
        _ => None,
    }
}

impl Field for bool {
    fn parse(values: &[String], spec: &Spec) -> Result<Self, String> {
        let v = one(values, spec)?;
        switch(v).ok_or_else(|| format!("expected {}, got {v:?}", spec.expects))
    }
    fn to_toml(&self) -> Option<toml::Value> {
        Some(toml::Value::Boolean(*self))
    }
}

impl Field for String {
    fn parse(values: &[String], spec: &Spec) -> Result<Self, String> {
        match values {
            [v] => Ok(v.clone()),
            _ => one(values, spec).map(str::to_string),
        }
    }
    fn to_toml(&self) -> Option<toml::Value> {
        Some(toml::Value::String(self.clone()))
    }
}

impl Field for PathBuf {
    fn parse(values: &[String], spec: &Spec) -> Result<Self, String> {
        let v = one(values, spec)?;
        if v.is_empty() {
            return Err(format!("expected {}, got an empty value", spec.expects));
        }
        Ok(PathBuf::from(v))
    }
    fn to_toml(&self) -> Option<toml::Value> {
        Some(toml::Value::String(self.display().to_string()))
    }
}

impl Field for IpAddr {
    fn parse(values: &[String], spec: &Spec) -> Result<Self, String> {
        let v = one(values, spec)?;
        v.parse()
            .map_err(|_| format!("expected {}, got {v:?}", spec.expects))
    }
    fn to_toml(&self) -> Option<toml::Value> {
        Some(toml::Value::String(self.to_string()))
    }
}

/// Unset with `off` or an empty value.
impl<T: Field> Field for Option<T> {
    fn parse(values: &[String], spec: &Spec) -> Result<Self, String> {
        match values {
            [v] if v.trim().is_empty() || v.trim().eq_ignore_ascii_case("off") => Ok(None),
            _ => T::parse(values, spec).map(Some),
        }
    }
    fn to_toml(&self) -> Option<toml::Value> {
        self.as_ref().and_then(T::to_toml)
    }
}

/// One element of a list setting.
pub(crate) trait Item: Sized {
    fn parse_item(v: &str) -> Result<Self, String>;
    fn render(&self) -> String;
}

impl Item for String {
    fn parse_item(v: &str) -> Result<Self, String> {
        if v.is_empty() {
            return Err("empty value".into());
        }
        Ok(v.to_string())
    }
    fn render(&self) -> String {
        self.clone()
    }
}

impl Item for Cidr {
    fn parse_item(v: &str) -> Result<Self, String> {
        v.parse()
            .map_err(|e: switchboard_turn::peer_filter::CidrError| e.to_string())
    }
    fn render(&self) -> String {
        self.to_string()
    }
}

impl Item for UserEntry {
    fn parse_item(v: &str) -> Result<Self, String> {
        v.parse()
            .map_err(|e: switchboard_turn::auth::CredentialError| {
                let name = v.split(':').next().unwrap_or_default();
                format!("{name}:…: {e}")
            })
    }
    fn render(&self) -> String {
        self.to_string()
    }
}

impl Item for SocketAddr {
    fn parse_item(v: &str) -> Result<Self, String> {
        v.parse()
            .map_err(|_| format!("expected IP:PORT (such as 203.0.113.2:3478), got {v:?}"))
    }
    fn render(&self) -> String {
        self.to_string()
    }
}

/// A list: any number of values; a lone `off` gives the empty list.
impl<T: Item> Field for Vec<T> {
    fn parse(values: &[String], _spec: &Spec) -> Result<Self, String> {
        let values: Vec<&str> = values.iter().map(|v| v.trim()).collect();
        if values.iter().any(|v| v.eq_ignore_ascii_case("off")) {
            if values.len() > 1 {
                return Err("`off` cannot be combined with other values".into());
            }
            return Ok(Vec::new());
        }
        let mut out: Vec<T> = Vec::new();
        for v in values.into_iter().filter(|v| !v.is_empty()) {
            out.push(T::parse_item(v)?);
        }
        Ok(out)
    }
    fn to_toml(&self) -> Option<toml::Value> {
        Some(toml::Value::Array(
            self.iter()
                .map(|v| toml::Value::String(v.render()))
                .collect(),
        ))
    }
}

/// A list of listen addresses; empty means the listener is off.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Listen(pub Vec<SocketAddr>);

impl Listen {
    /// Parses `IP:PORT` values (also `:PORT` for every address and `localhost:PORT` for
    /// loopback); a lone `off` (or an empty list) disables the listener.
    pub fn parse<S: AsRef<str>>(values: &[S]) -> Result<Self, String> {
        let mut out = Vec::new();
        let values: Vec<&str> = values
            .iter()
            .flat_map(|v| v.as_ref().split(','))
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .collect();
        if values.iter().any(|v| v.eq_ignore_ascii_case("off")) {
            if values.len() > 1 {
                return Err("`off` cannot be combined with addresses".into());
            }
            return Ok(Listen(out));
        }
        for v in values {
            for addr in listen_addr(v)? {
                if !out.contains(&addr) {
                    out.push(addr);
                }
            }
        }
        Ok(Listen(out))
    }

    /// Whether the listener is off.
    pub fn is_off(&self) -> bool {
        self.0.is_empty()
    }
}

/// One listen address as operators write it: `IP:PORT`, `[IPv6]:PORT`, `:PORT` (every IPv4
/// address, like Caddy and Go) or `localhost:PORT` (127.0.0.1).
fn listen_addr(v: &str) -> Result<Vec<SocketAddr>, String> {
    let bad = || {
        format!(
            "expected IP:PORT (such as 127.0.0.1:3478, [::1]:3478, :3478 or localhost:3478) \
             or off, got {v:?}"
        )
    };
    if let Ok(a) = v.parse::<SocketAddr>() {
        return Ok(vec![a]);
    }
    let (host, port) = v.rsplit_once(':').ok_or_else(bad)?;
    let port: u16 = match port.parse::<u32>() {
        Ok(p) if p <= 65535 => p as u16,
        Ok(_) => return Err(format!("port out of range 0-65535 in {v:?}")),
        Err(_) => return Err(bad()),
    };
    match host {
        "" => Ok(vec![SocketAddr::from(([0, 0, 0, 0], port))]),
        "localhost" => Ok(vec![SocketAddr::from(([127, 0, 0, 1], port))]),
        // Names other than localhost are refused rather than resolved: a listener bound to
        // whatever DNS answers at start-up would be a surprise.
        _ => Err(bad()),
    }
}

impl Field for Listen {
    fn parse(values: &[String], _spec: &Spec) -> Result<Self, String> {
        Listen::parse(values)
    }
    fn to_toml(&self) -> Option<toml::Value> {
        Some(toml::Value::Array(
            self.0
                .iter()
                .map(|a| toml::Value::String(a.to_string()))
                .collect(),
        ))
    }
}

/// The relay port range `LOW-HIGH`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortRange {
    /// First port.
    pub low: u16,
    /// Last port (inclusive).
    pub high: u16,
}

impl FromStr for PortRange {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (lo, hi) = s
            .split_once('-')
            .ok_or_else(|| format!("expected LOW-HIGH, got {s:?}"))?;
        let port = |p: &str, which: &str| {
            p.trim()
                .parse::<u16>()
                .map_err(|_| format!("bad {which} port {p:?} (1-65535)"))
        };
        let (low, high) = (port(lo, "low")?, port(hi, "high")?);
        if low == 0 || low > high {
            return Err(format!("need 1 <= LOW <= HIGH, got {low}-{high}"));
        }
        Ok(PortRange { low, high })
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.low, self.high)
    }
}

impl Default for PortRange {
    fn default() -> Self {
        PortRange {
            low: 49152,
            high: 65535,
        }
    }
}

impl Field for PortRange {
    fn parse(values: &[String], spec: &Spec) -> Result<Self, String> {
        one(values, spec)?.parse()
    }
    fn to_toml(&self) -> Option<toml::Value> {
        Some(toml::Value::String(self.to_string()))
    }
}

/// Log output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Pretty,
    /// One JSON object per line.
    Json,
}

impl Field for LogFormat {
    fn parse(values: &[String], spec: &Spec) -> Result<Self, String> {
        match one(values, spec)?.to_ascii_lowercase().as_str() {
            "json" => Ok(LogFormat::Json),
            "pretty" => Ok(LogFormat::Pretty),
            other => Err(format!("expected json or pretty, got {other:?}")),
        }
    }
    fn to_toml(&self) -> Option<toml::Value> {
        Some(toml::Value::String(
            match self {
                LogFormat::Json => "json",
                LogFormat::Pretty => "pretty",
            }
            .into(),
        ))
    }
}
