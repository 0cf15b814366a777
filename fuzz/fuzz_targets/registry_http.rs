//! (c) The registry's HTTP handling in process (the router, no socket): a
//! sequence of arbitrary requests against a fresh in-memory store each run, so
//! a run is reproducible from its input alone and memory stays bounded.
//!
//! Input: up to 8 requests separated by one 0xFF byte, each written like
//! HTTP/1.1: `METHOD PATH-AND-QUERY`, header lines, an empty line, the body.
//! The server requires basic auth; a request without an Authorization header
//! gets the right one, so both the refusal and every handler are reachable.
//!
//! Beyond "no panic": never a 5xx (the store is in memory and cannot fail).
#![no_main]

use std::sync::{Arc, OnceLock};

use axum::body::Body;
use axum::http::{HeaderName, HeaderValue, Method, Request, header};
use libfuzzer_sys::fuzz_target;
use opal_registry::{BasicAuth, Store, router};
use tower::ServiceExt;

const MAX_REQUESTS: usize = 8;
/// Small, so the body limit is reachable by the fuzzer's input sizes.
const MAX_BODY_BYTES: usize = 2048;
/// "Basic " + base64("fuzz:fuzz").
const AUTHORIZATION: &str = "Basic ZnV6ejpmdXp6";

fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime")
    })
}

/// One request from its text form; None when it is not a request hyper would
/// hand to the router (bad method token, URI or header).
fn request(raw: &[u8]) -> Option<Request<Body>> {
    let split = raw
        .windows(2)
        .position(|w| w == b"\n\n")
        .map_or((raw, &[][..]), |i| (&raw[..i], &raw[i + 2..]));
    let (head, body) = split;
    let mut lines = head.split(|b| *b == b'\n');
    let mut start = lines.next()?.splitn(2, |b| *b == b' ');
    let method = Method::from_bytes(start.next()?).ok()?;
    let uri = std::str::from_utf8(start.next()?).ok()?;
    let mut builder = Request::builder().method(method).uri(uri);
    let mut has_auth = false;
    for line in lines {
        let colon = line.iter().position(|b| *b == b':')?;
        let name = HeaderName::from_bytes(&line[..colon]).ok()?;
        let value = HeaderValue::from_bytes(line[colon + 1..].trim_ascii()).ok()?;
        has_auth |= name == header::AUTHORIZATION;
        builder = builder.header(name, value);
    }
    if !has_auth {
        builder = builder.header(header::AUTHORIZATION, AUTHORIZATION);
    }
    builder.body(Body::from(body.to_vec())).ok()
}

fuzz_target!(|bytes: &[u8]| {
    let auth = BasicAuth::parse("fuzz:fuzz").expect("auth");
    let app = router(Arc::new(Store::in_memory()), Some(auth), MAX_BODY_BYTES);
    runtime().block_on(async {
        for raw in bytes.split(|b| *b == 0xFF).take(MAX_REQUESTS) {
            let Some(request) = request(raw) else {
                continue;
            };
            let what = format!("{} {}", request.method(), request.uri());
            let response = app.clone().oneshot(request).await.expect("infallible");
            let status = response.status();
            let body = axum::body::to_bytes(response.into_body(), usize::MAX)
                .await
                .expect("body");
            assert!(
                !status.is_server_error(),
                "{what} answered {status}: {}",
                String::from_utf8_lossy(&body)
            );
        }
    });
});
