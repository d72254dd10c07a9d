//! The WebSocket opening handshake (RFC 6455 §4.2) over HTTP/1.1: checks the upgrade
//! request, picks the subprotocol and answers 101.
//!
//! TaskNest does this itself rather than through axum's `WebSocketUpgrade` because axum
//! hands over a socket whose only way out is tungstenite's `Sink`, and the connection writes
//! its frames through a buffer of its own (see `socket`). The rejections keep axum's statuses
//! and texts.

use axum::body::Body;
use axum::http::header::{
    CONNECTION, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_KEY, SEC_WEBSOCKET_PROTOCOL,
    SEC_WEBSOCKET_VERSION, UPGRADE,
};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use hyper::upgrade::OnUpgrade;
use tungstenite::handshake::derive_accept_key;

/// Why an upgrade request was refused: the status and text to answer with.
#[derive(Debug)]
pub struct Rejected(pub StatusCode, pub &'static str);

impl IntoResponse for Rejected {
    fn into_response(self) -> Response {
        (self.0, self.1).into_response()
    }
}

/// A checked upgrade request, not answered yet.
pub struct Upgrade {
    key: HeaderValue,
    /// The subprotocol chosen: the first of the server's that the client offered.
    pub protocol: Option<&'static str>,
    /// Resolves to the upgraded connection once the 101 has been sent.
    pub on_upgrade: OnUpgrade,
}

impl Upgrade {
    /// Checks an upgrade request and picks the first of `protocols` (in the server's order
    /// of preference) that the client offers.
    pub fn check(parts: &mut Parts, protocols: &[&'static str]) -> Result<Self, Rejected> {
        if parts.method != Method::GET {
            return Err(Rejected(
                StatusCode::METHOD_NOT_ALLOWED,
                "Request method must be `GET`",
            ));
        }
        if !header_contains(&parts.headers, CONNECTION, "upgrade") {
            return Err(Rejected(
                StatusCode::BAD_REQUEST,
                "Connection header did not include 'upgrade'",
            ));
        }
        if !header_is(&parts.headers, UPGRADE, "websocket") {
            return Err(Rejected(
                StatusCode::BAD_REQUEST,
                "`Upgrade` header did not include 'websocket'",
            ));
        }
        let key = parts
            .headers
            .get(SEC_WEBSOCKET_KEY)
            .cloned()
            .ok_or(Rejected(
                StatusCode::BAD_REQUEST,
                "`Sec-WebSocket-Key` header missing",
            ))?;
        if !header_is(&parts.headers, SEC_WEBSOCKET_VERSION, "13") {
            return Err(Rejected(
                StatusCode::BAD_REQUEST,
                "`Sec-WebSocket-Version` header did not include '13'",
            ));
        }
        // Absent for a request hyper cannot upgrade (HTTP/1.0, for one).
        let on_upgrade = parts.extensions.remove::<OnUpgrade>().ok_or(Rejected(
            StatusCode::UPGRADE_REQUIRED,
            "WebSocket request couldn't be upgraded since no upgrade state was present",
        ))?;
        let offered: Vec<&[u8]> = parts
            .headers
            .get_all(SEC_WEBSOCKET_PROTOCOL)
            .iter()
            .flat_map(|value| value.as_bytes().split(|&b| b == b','))
            .map(<[u8]>::trim_ascii)
            .collect();
        let protocol = protocols
            .iter()
            .find(|protocol| offered.contains(&protocol.as_bytes()))
            .copied();
        Ok(Self {
            key,
            protocol,
            on_upgrade,
        })
    }

    /// The `101 Switching Protocols` answer.
    pub fn response(&self) -> Response {
        let mut response = Response::new(Body::empty());
        *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        let headers = response.headers_mut();
        headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(UPGRADE, HeaderValue::from_static("websocket"));
        if let Ok(accept) = HeaderValue::from_str(&derive_accept_key(self.key.as_bytes())) {
            headers.insert(SEC_WEBSOCKET_ACCEPT, accept);
        }
        if let Some(protocol) = self.protocol {
            headers.insert(SEC_WEBSOCKET_PROTOCOL, HeaderValue::from_static(protocol));
        }
        response
    }
}

fn header_is(headers: &HeaderMap, name: HeaderName, value: &str) -> bool {
    headers
        .get(name)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(value.as_bytes()))
}

/// `Connection` is a list (`keep-alive, Upgrade`), matched case-insensitively.
fn header_contains(headers: &HeaderMap, name: HeaderName, value: &str) -> bool {
    headers.get(name).is_some_and(|v| {
        v.as_bytes()
            .split(|&b| b == b',')
            .any(|token| token.trim_ascii().eq_ignore_ascii_case(value.as_bytes()))
    })
}

#[cfg(test)]
mod tests {
    use axum::http::Request;

    use super::*;

    fn parts(headers: &[(&str, &str)]) -> Parts {
        let mut request = Request::get("/graphql");
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let (mut parts, ()) = request.body(()).expect("request").into_parts();
        parts.extensions.insert(hyper_upgrade());
        parts
    }

    /// An `OnUpgrade` as hyper puts in an upgradable request's extensions.
    fn hyper_upgrade() -> OnUpgrade {
        let mut request = hyper::Request::new(());
        hyper::upgrade::on(&mut request)
    }

    const VALID: [(&str, &str); 4] = [
        ("connection", "keep-alive, Upgrade"),
        ("upgrade", "WebSocket"),
        ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ("sec-websocket-version", "13"),
    ];

    #[test]
    fn a_valid_request_gets_the_rfc_accept_key_and_the_servers_preferred_protocol() {
        let mut headers = VALID.to_vec();
        headers.push(("sec-websocket-protocol", "graphql-ws, graphql-transport-ws"));
        let upgrade = Upgrade::check(
            &mut parts(&headers),
            &["graphql-transport-ws", "graphql-ws"],
        )
        .expect("valid");
        assert_eq!(upgrade.protocol, Some("graphql-transport-ws"));
        let response = upgrade.response();
        assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
        // The example of RFC 6455 §1.3.
        assert_eq!(
            response.headers()[SEC_WEBSOCKET_ACCEPT],
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
        assert_eq!(
            response.headers()[SEC_WEBSOCKET_PROTOCOL],
            "graphql-transport-ws"
        );
    }

    #[test]
    fn no_protocol_is_chosen_when_the_client_offers_none_the_server_speaks() {
        let mut headers = VALID.to_vec();
        headers.push(("sec-websocket-protocol", "mqtt"));
        let upgrade = Upgrade::check(&mut parts(&headers), &["graphql-transport-ws"]).expect("ok");
        assert_eq!(upgrade.protocol, None);
        assert!(
            !upgrade
                .response()
                .headers()
                .contains_key(SEC_WEBSOCKET_PROTOCOL)
        );
    }

    #[test]
    fn a_bad_upgrade_request_is_rejected_with_axums_status() {
        let without = |name: &str| -> Vec<(&str, &str)> {
            VALID.iter().copied().filter(|(n, _)| *n != name).collect()
        };
        let cases = [
            (without("connection"), StatusCode::BAD_REQUEST),
            (without("sec-websocket-key"), StatusCode::BAD_REQUEST),
            (without("sec-websocket-version"), StatusCode::BAD_REQUEST),
        ];
        for (headers, status) in cases {
            let rejected = Upgrade::check(&mut parts(&headers), &["graphql-ws"]).err();
            assert_eq!(rejected.map(|r| r.0), Some(status), "{headers:?}");
        }
        let mut not_upgradable = parts(&VALID);
        not_upgradable.extensions.clear();
        let rejected = Upgrade::check(&mut not_upgradable, &["graphql-ws"]).err();
        assert_eq!(rejected.map(|r| r.0), Some(StatusCode::UPGRADE_REQUIRED));
    }
}
