//! The OpenAPI document of the HTTP API (openapi.json beside this file, written by
//! hand), served at `GET /openapi.json`. The unit tests below keep it and the
//! router in step: every route and method served is documented, and nothing else.

use serde_json::Value;

pub(crate) const PATH: &str = "/openapi.json";
const DOCUMENT: &str = include_str!("openapi.json");

/// The document as a server with or without basic auth serves it: without auth
/// nothing asks for credentials, so the top-level `security` goes.
pub(crate) fn document(basic_auth: bool) -> String {
    if basic_auth {
        return DOCUMENT.to_owned();
    }
    match serde_json::from_str::<Value>(DOCUMENT) {
        Ok(mut doc) => {
            if let Some(root) = doc.as_object_mut() {
                root.remove("security");
            }
            doc.to_string()
        }
        // Unreachable: the tests parse the compiled-in text.
        Err(_) => DOCUMENT.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::sync::Arc;

    use serde_json::Value;

    use super::*;
    use crate::api::{self, BasicAuth};
    use crate::store::Store;

    const METHODS: [&str; 5] = ["GET", "POST", "PUT", "DELETE", "PATCH"];

    fn parsed() -> Value {
        serde_json::from_str(DOCUMENT).expect("openapi.json is not JSON")
    }

    fn documented_methods(doc: &Value, path: &str) -> BTreeSet<String> {
        doc["paths"][path]
            .as_object()
            .unwrap_or_else(|| panic!("{path} is not in openapi.json"))
            .keys()
            .filter(|k| METHODS.iter().any(|m| m.eq_ignore_ascii_case(k)))
            .map(|k| k.to_ascii_uppercase())
            .collect()
    }

    /// The router's paths are the document's paths, both ways.
    #[test]
    fn every_route_is_documented_and_every_documented_path_is_served() {
        let doc = parsed();
        let mut served: BTreeSet<&str> = api::routes().into_iter().map(|(p, _)| p).collect();
        served.insert(PATH);
        let documented: BTreeSet<&str> = doc["paths"]
            .as_object()
            .expect("paths")
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(
            served.difference(&documented).collect::<Vec<_>>(),
            Vec::<&&str>::new(),
            "served but not in openapi.json"
        );
        assert_eq!(
            documented.difference(&served).collect::<Vec<_>>(),
            Vec::<&&str>::new(),
            "in openapi.json but not served"
        );
    }

    /// For every path, the methods that do not answer 405 are the documented ones.
    /// Axum's routes cannot be listed by method, so each method is tried over HTTP.
    #[tokio::test]
    async fn every_method_served_is_documented_and_no_other() {
        let doc = parsed();
        let app = api::router(Arc::new(Store::in_memory()), None, 1024);
        let (addr, _server) = api::spawn("127.0.0.1:0", app).await.expect("spawn");
        let http = reqwest::Client::new();
        for path in doc["paths"].as_object().expect("paths").keys() {
            let url = format!(
                "http://{addr}{}",
                path.replace("{id}", "1")
                    .replace("{subject}", "s")
                    .replace("{version}", "1")
            );
            let mut served = BTreeSet::new();
            for method in METHODS {
                let response = http
                    .request(method.parse().expect("method"), &url)
                    .send()
                    .await
                    .expect("send");
                if response.status() != reqwest::StatusCode::METHOD_NOT_ALLOWED {
                    served.insert(method.to_owned());
                } else {
                    // Every 405 is ours, in Confluent's error shape.
                    let body: Value = response.json().await.expect("405 body");
                    assert_eq!(body["error_code"], 405, "{method} {path}: {body}");
                }
            }
            assert_eq!(served, documented_methods(&doc, path), "methods of {path}");
        }
    }

    /// Every `$ref` names something in the document.
    #[test]
    fn every_reference_resolves() {
        fn walk(doc: &Value, node: &Value, refs: &mut usize) {
            match node {
                Value::Object(map) => {
                    if let Some(Value::String(target)) = map.get("$ref") {
                        let pointer = target.strip_prefix('#').expect("local $ref");
                        assert!(doc.pointer(pointer).is_some(), "{target} does not resolve");
                        *refs += 1;
                    }
                    map.values().for_each(|v| walk(doc, v, refs));
                }
                Value::Array(items) => items.iter().for_each(|v| walk(doc, v, refs)),
                _ => {}
            }
        }
        let doc = parsed();
        assert!(
            doc["openapi"]
                .as_str()
                .expect("openapi")
                .starts_with("3.0.")
        );
        let mut refs = 0;
        walk(&doc, &doc, &mut refs);
        assert!(refs > 0);
    }

    /// Served as application/json, without credentials even when auth is on, and
    /// with `security` only when auth is on.
    #[tokio::test]
    async fn served_without_credentials_with_security_only_when_auth_is_on() {
        for auth in [None, Some(BasicAuth::parse("u:p").expect("auth"))] {
            let on = auth.is_some();
            let app = api::router(Arc::new(Store::in_memory()), auth, 1024);
            let (addr, _server) = api::spawn("127.0.0.1:0", app).await.expect("spawn");
            let http = reqwest::Client::new();
            let response = http
                .get(format!("http://{addr}{PATH}"))
                .header("Accept", "application/vnd.schemaregistry.v1+json")
                .send()
                .await
                .expect("send");
            assert_eq!(response.status(), reqwest::StatusCode::OK, "auth {on}");
            assert_eq!(response.headers()["content-type"], "application/json");
            let served: Value = response.json().await.expect("json");
            let mut expected = parsed();
            if !on {
                expected.as_object_mut().expect("root").remove("security");
            }
            assert_eq!(served, expected, "auth {on}");
            // The API itself still wants credentials.
            let status = http
                .get(format!("http://{addr}/subjects"))
                .send()
                .await
                .expect("send")
                .status();
            let want = if on { 401 } else { 200 };
            assert_eq!(status.as_u16(), want, "auth {on}");
        }
    }
}
