//! The pages served by the binary: the console (`GET /`: listeners and live counters from
//! `/healthz` and `/metrics`), the call page (`GET /call`: WebRTC through the hub's signaling
//! rooms and switchboard's STUN/TURN) and the send page (`GET /send`: `switchboard send` /
//! `receive` in a browser, docs/send.md). Sources live in `web/` at the repository root and are
//! compiled in with `include_bytes!`: no CDN, no build step, nothing read from disk at run time.
//!
//! Every answer carries a strict Content-Security-Policy (scripts and styles from this origin
//! only, no inline code, connections to this origin and WebSockets, media from blobs), a strong
//! `ETag` (FNV-1a of the bytes, computed at compile time) and `Cache-Control: no-cache`, so a
//! browser revalidates and gets `304 Not Modified` while the binary is unchanged.

use axum::extract::Path;
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use switchboard_hub::codes::error as code;

use crate::hub::error::ApiError;

/// The policy of every page and asset. `connect-src` allows `ws:`/`wss:` because not every
/// browser counts a WebSocket to the page's own host as `'self'`; scripts stay same-origin only.
pub(crate) const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self'; media-src 'self' blob: mediastream:; connect-src 'self' ws: wss:; \
     form-action 'self'; base-uri 'none'; frame-ancestors 'none'";

/// One embedded file.
struct Asset {
    body: &'static [u8],
    content_type: &'static str,
    etag: u64,
}

/// FNV-1a, 64 bits: a compile-time fingerprint for the `ETag` (not a security property).
const fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut i = 0;
    while i < bytes.len() {
        hash ^= bytes[i] as u64;
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        i += 1;
    }
    hash
}

macro_rules! asset {
    ($file:literal, $type:expr) => {{
        const BODY: &[u8] = include_bytes!(concat!("../../../../web/", $file));
        Asset {
            body: BODY,
            content_type: $type,
            etag: fnv1a(BODY),
        }
    }};
}

const HTML: &str = "text/html; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";

static CONSOLE: Asset = asset!("console.html", HTML);
static CALL: Asset = asset!("call.html", HTML);
static SEND: Asset = asset!("send.html", HTML);

/// `/assets/NAME`: the scripts, the style sheet and the icon.
static ASSETS: &[(&str, Asset)] = &[
    ("call.js", asset!("call.js", JS)),
    ("console.js", asset!("console.js", JS)),
    ("send.js", asset!("send.js", JS)),
    ("spake2.js", asset!("spake2.js", JS)),
    ("common.js", asset!("common.js", JS)),
    ("style.css", asset!("style.css", CSS)),
    ("favicon.svg", asset!("favicon.svg", "image/svg+xml")),
];

/// The JavaScript SDK (`clients/js`), served so pages can import it from the server itself.
static SDK: Asset = {
    const BODY: &[u8] = include_bytes!("../../../../clients/js/switchboard.js");
    Asset {
        body: BODY,
        content_type: JS,
        etag: fnv1a(BODY),
    }
};

/// Its TypeScript declarations.
static SDK_TYPES: Asset = {
    const BODY: &[u8] = include_bytes!("../../../../clients/js/switchboard.d.ts");
    Asset {
        body: BODY,
        content_type: "application/typescript; charset=utf-8",
        etag: fnv1a(BODY),
    }
};

/// The page routes, to merge into the HTTP router (no state).
pub(crate) fn routes() -> Router {
    Router::new()
        .route("/", get(console))
        .route("/call", get(call))
        .route("/send", get(send))
        .route("/assets/{name}", get(asset))
        .route("/sdk/switchboard.js", get(sdk))
        .route("/sdk/switchboard.d.ts", get(sdk_types))
}

/// The SDK is a public script: any page may import it as a module (CORS `*`, no credentials).
async fn sdk(headers: HeaderMap) -> Response {
    public(serve(&SDK, &headers))
}

async fn sdk_types(headers: HeaderMap) -> Response {
    public(serve(&SDK_TYPES, &headers))
}

fn public(mut response: Response) -> Response {
    let h = response.headers_mut();
    h.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    h.insert(
        HeaderName::from_static("cross-origin-resource-policy"),
        HeaderValue::from_static("cross-origin"),
    );
    response
}

async fn console(headers: HeaderMap) -> Response {
    serve(&CONSOLE, &headers)
}

async fn call(headers: HeaderMap) -> Response {
    serve(&CALL, &headers)
}

async fn send(headers: HeaderMap) -> Response {
    serve(&SEND, &headers)
}

async fn asset(Path(name): Path<String>, headers: HeaderMap) -> Response {
    match ASSETS.iter().find(|(n, _)| *n == name) {
        Some((_, a)) => serve(a, &headers),
        None => ApiError::new(StatusCode::NOT_FOUND, code::METHOD_NOT_FOUND, "not found")
            .into_response(),
    }
}

/// Whether an `If-None-Match` header names `etag` (or is `*`).
fn not_modified(headers: &HeaderMap, etag: &str) -> bool {
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().trim_start_matches("W/"))
        .any(|t| t == etag || t == "*")
}

fn serve(asset: &'static Asset, request: &HeaderMap) -> Response {
    let etag = format!("\"{:016x}\"", asset.etag);
    let fresh = not_modified(request, &etag);
    let mut response = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        ([(header::CONTENT_TYPE, asset.content_type)], asset.body).into_response()
    };
    let h = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&etag) {
        h.insert(header::ETAG, v);
    }
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(
        HeaderName::from_static("permissions-policy"),
        HeaderValue::from_static("camera=(self), microphone=(self), geolocation=()"),
    );
    h.insert(
        HeaderName::from_static("cross-origin-opener-policy"),
        HeaderValue::from_static("same-origin"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_asset_is_served_and_typed() {
        for (name, a) in ASSETS {
            assert!(!a.body.is_empty(), "{name} is empty");
            let expected = match name.rsplit_once('.').map(|x| x.1) {
                Some("js") => JS,
                Some("css") => CSS,
                Some("svg") => "image/svg+xml",
                other => panic!("unexpected asset type {other:?}"),
            };
            assert_eq!(a.content_type, expected, "{name}");
        }
        assert_eq!(CONSOLE.content_type, HTML);
        assert_eq!(CALL.content_type, HTML);
        assert_eq!(SEND.content_type, HTML);
    }

    #[test]
    fn pages_reference_only_embedded_assets() {
        for page in [&CONSOLE, &CALL, &SEND] {
            let text = std::str::from_utf8(page.body).unwrap_or_default();
            for part in text.split("/assets/").skip(1) {
                let name: String = part
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '.' || *c == '-')
                    .collect();
                assert!(
                    ASSETS.iter().any(|(n, _)| *n == name),
                    "page links /assets/{name}, which is not embedded"
                );
            }
            // The CSP forbids inline code: no inline scripts, handlers or style attributes.
            assert!(!text.contains("<script>"), "inline script");
            assert!(!text.contains("<style"), "inline style sheet");
            assert!(!text.contains(" style="), "inline style");
            assert!(!text.contains(" onclick="), "inline handler");
        }
    }

    #[test]
    fn if_none_match_forms() {
        let mut h = HeaderMap::new();
        assert!(!not_modified(&h, "\"ab\""));
        h.insert(
            header::IF_NONE_MATCH,
            HeaderValue::from_static("\"x\", W/\"ab\""),
        );
        assert!(not_modified(&h, "\"ab\""));
        h.insert(header::IF_NONE_MATCH, HeaderValue::from_static("*"));
        assert!(not_modified(&h, "\"ab\""));
        h.insert(header::IF_NONE_MATCH, HeaderValue::from_static("\"abc\""));
        assert!(!not_modified(&h, "\"ab\""));
    }

    #[test]
    fn fingerprint_differs_per_content() {
        assert_ne!(fnv1a(b"a"), fnv1a(b"b"));
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
    }
}
