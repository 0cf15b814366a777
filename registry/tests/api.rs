//! The registry's HTTP API, in process on port 0, spoken to over real HTTP.

use std::sync::Arc;

use opal_registry::{BasicAuth, Store, router, spawn};
use reqwest::{Client, StatusCode};
use serde_json::{Value, json};

const V1: &str = "application/vnd.schemaregistry.v1+json";

struct Server {
    base: String,
    http: Client,
}

impl Server {
    async fn start(store: Store, auth: Option<&str>) -> Server {
        let auth = auth.map(|a| BasicAuth::parse(a).expect("auth"));
        let app = router(Arc::new(store), auth, 64 * 1024);
        let (addr, _) = spawn("127.0.0.1:0", app).await.expect("bind");
        Server {
            base: format!("http://{addr}"),
            http: Client::new(),
        }
    }

    async fn memory() -> Server {
        Server::start(Store::in_memory(), None).await
    }

    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        let url = format!("{}{path}", self.base);
        let mut req = self
            .http
            .request(method.parse().expect("method"), url)
            .header("Accept", V1);
        if let Some(body) = body {
            req = req.header("Content-Type", V1).body(body.to_string());
        }
        let resp = req.send().await.expect("send");
        let status = resp.status();
        let text = resp.text().await.expect("body");
        let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, value)
    }

    async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.call("GET", path, None).await
    }

    async fn register(&self, subject: &str, schema: &Value) -> (StatusCode, Value) {
        let path = format!("/subjects/{subject}/versions");
        self.call("POST", &path, Some(json!({ "schema": schema.to_string() })))
            .await
    }

    async fn register_ok(&self, subject: &str, schema: &Value) -> u64 {
        let (status, body) = self.register(subject, schema).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body["id"].as_u64().expect("id")
    }

    /// `PUT /config/{subject}`, asserting the registry took the level.
    async fn set_subject_level(&self, subject: &str, level: &str) {
        let answer = self
            .call(
                "PUT",
                &format!("/config/{subject}"),
                Some(json!({"compatibility": level})),
            )
            .await;
        assert_eq!(
            answer,
            (StatusCode::OK, json!({"compatibility": level})),
            "PUT /config/{subject} {level}"
        );
        assert_eq!(
            self.get(&format!("/config/{subject}")).await,
            (StatusCode::OK, json!({"compatibilityLevel": level})),
            "GET /config/{subject} after setting {level}"
        );
    }
}

fn record(fields: Value) -> Value {
    json!({"type": "record", "name": "Thing", "namespace": "opal.test", "fields": fields})
}

fn v1() -> Value {
    record(json!([{"name": "a", "type": "string"}]))
}

fn v2() -> Value {
    record(
        json!([{"name": "a", "type": "string"}, {"name": "b", "type": ["null", "long"], "default": null}]),
    )
}

fn error_code(body: &Value) -> u64 {
    body["error_code"]
        .as_u64()
        .unwrap_or_else(|| panic!("no error_code in {body}"))
}

#[tokio::test]
async fn root_and_types() {
    let s = Server::memory().await;
    assert_eq!(s.get("/").await, (StatusCode::OK, json!({})));
    assert_eq!(
        s.get("/schemas/types").await,
        (StatusCode::OK, json!(["AVRO"]))
    );
}

#[tokio::test]
async fn register_reuses_ids_within_and_across_subjects() {
    let s = Server::memory().await;
    let id = s.register_ok("orders-value", &v1()).await;
    assert_eq!(
        s.register_ok("orders-value", &v1()).await,
        id,
        "same schema, same id"
    );
    assert_eq!(
        s.get("/subjects/orders-value/versions").await.1,
        json!([1]),
        "no new version"
    );
    assert_eq!(
        s.register_ok("other-value", &v1()).await,
        id,
        "same schema in another subject"
    );
    let id2 = s.register_ok("orders-value", &v2()).await;
    assert_ne!(id2, id);
    assert_eq!(
        s.get("/subjects").await.1,
        json!(["orders-value", "other-value"])
    );
    assert_eq!(
        s.get("/subjects/orders-value/versions").await.1,
        json!([1, 2])
    );

    let (status, latest) = s.get("/subjects/orders-value/versions/latest").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(latest["subject"], "orders-value");
    assert_eq!(latest["version"], 2);
    assert_eq!(latest["id"], id2);
    let schema: Value =
        serde_json::from_str(latest["schema"].as_str().expect("schema")).expect("json");
    assert_eq!(schema, v2());
    assert_eq!(s.get("/subjects/orders-value/versions/-1").await.1, latest);
    assert_eq!(s.get("/subjects/orders-value/versions/1").await.1["id"], id);
    assert_eq!(
        s.get("/subjects/orders-value/versions/1/schema").await.1,
        v1()
    );

    let (status, by_id) = s.get(&format!("/schemas/ids/{id}")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        serde_json::from_str::<Value>(by_id["schema"].as_str().expect("s")).expect("j"),
        v1()
    );
    assert_eq!(
        s.get(&format!("/schemas/ids/{id}?subject=other-value"))
            .await
            .0,
        StatusCode::OK
    );
    assert_eq!(s.get(&format!("/schemas/ids/{id}/schema")).await.1, v1());
    assert_eq!(
        s.get(&format!("/schemas/ids/{id}/versions")).await.1,
        json!([{"subject": "orders-value", "version": 1}, {"subject": "other-value", "version": 1}])
    );
}

#[tokio::test]
async fn lookup_under_subject() {
    let s = Server::memory().await;
    let id = s.register_ok("t-value", &v1()).await;
    let (status, found) = s
        .call(
            "POST",
            "/subjects/t-value",
            Some(json!({"schema": v1().to_string()})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        (found["id"].as_u64(), found["version"].as_u64()),
        (Some(id), Some(1))
    );
    let (status, body) = s
        .call(
            "POST",
            "/subjects/t-value",
            Some(json!({"schema": v2().to_string()})),
        )
        .await;
    assert_eq!((status, error_code(&body)), (StatusCode::NOT_FOUND, 40403));
    let (status, body) = s
        .call(
            "POST",
            "/subjects/nope",
            Some(json!({"schema": v1().to_string()})),
        )
        .await;
    assert_eq!((status, error_code(&body)), (StatusCode::NOT_FOUND, 40401));
}

#[tokio::test]
async fn not_found_and_invalid_input_codes() {
    let s = Server::memory().await;
    s.register_ok("t-value", &v1()).await;
    let cases = [
        ("/subjects/missing/versions", StatusCode::NOT_FOUND, 40401),
        ("/subjects/missing/versions/1", StatusCode::NOT_FOUND, 40401),
        ("/subjects/t-value/versions/7", StatusCode::NOT_FOUND, 40402),
        ("/schemas/ids/999", StatusCode::NOT_FOUND, 40403),
        ("/schemas/ids/999/schema", StatusCode::NOT_FOUND, 40403),
        ("/schemas/ids/999/versions", StatusCode::NOT_FOUND, 40403),
        (
            "/subjects/t-value/versions/abc",
            StatusCode::UNPROCESSABLE_ENTITY,
            42202,
        ),
        (
            "/subjects/t-value/versions/0",
            StatusCode::UNPROCESSABLE_ENTITY,
            42202,
        ),
        ("/config/t-value", StatusCode::NOT_FOUND, 40408),
        ("/no/such/route", StatusCode::NOT_FOUND, 404),
    ];
    for (path, status, code) in cases {
        let (got, body) = s.get(path).await;
        assert_eq!(
            (got, error_code(&body)),
            (status, code),
            "GET {path}: {body}"
        );
        assert!(
            body["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{path}: message"
        );
    }

    for bad in [
        json!({"schema": "{not json"}),
        json!({"schema": "{\"type\":\"record\"}"}),
        json!({"schema": ""}),
    ] {
        let (status, body) = s
            .call("POST", "/subjects/x-value/versions", Some(bad.clone()))
            .await;
        assert_eq!(
            (status, error_code(&body)),
            (StatusCode::UNPROCESSABLE_ENTITY, 42201),
            "{bad}"
        );
    }
    let protobuf = json!({"schema": "syntax = \"proto3\";", "schemaType": "PROTOBUF"});
    let (status, body) = s
        .call("POST", "/subjects/x-value/versions", Some(protobuf))
        .await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::UNPROCESSABLE_ENTITY, 42201)
    );
    assert!(
        body["message"].as_str().expect("m").contains("AVRO"),
        "{body}"
    );
    assert_eq!(
        s.get("/subjects").await.1,
        json!(["t-value"]),
        "nothing registered by refusals"
    );

    let (status, body) = s
        .call("PUT", "/config", Some(json!({"compatibility": "SIDEWAYS"})))
        .await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::UNPROCESSABLE_ENTITY, 42203)
    );
}

/// README: schema references and non-AVRO schema types are not supported and are
/// answered with 42201. Every refused body below holds a valid, self-contained Avro
/// schema, so a registry that ignored `references` or `schemaType` would register it.
#[tokio::test]
async fn references_and_non_avro_types_are_42201_and_register_nothing() {
    let s = Server::memory().await;
    let target = record(json!([{"name": "who", "type": "string"}]));
    let target_id = s.register_ok("customer-value", &target).await;
    let reference = json!([{"name": "opal.test.Thing", "subject": "customer-value", "version": 1}]);

    let refused = [
        (
            json!({"schema": v1().to_string(), "references": reference}),
            "references",
        ),
        (
            json!({"schema": v1().to_string(), "schemaType": "AVRO", "references": reference}),
            "references",
        ),
        (
            json!({"schema": v1().to_string(), "schemaType": "JSON"}),
            "JSON",
        ),
        (
            json!({"schema": v1().to_string(), "schemaType": "PROTOBUF"}),
            "PROTOBUF",
        ),
    ];
    for (body, named) in &refused {
        let (status, answer) = s
            .call(
                "POST",
                "/subjects/orders-value/versions",
                Some(body.clone()),
            )
            .await;
        assert_eq!(
            status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{body} was answered {answer}"
        );
        assert_eq!(error_code(&answer), 42201, "{body}: {answer}");
        let message = answer["message"].as_str().expect("message");
        assert!(message.contains(named), "{body}: {message}");
    }

    // Nothing was registered: no subject, no version, no id spent on the refused schema.
    assert_eq!(s.get("/subjects").await.1, json!(["customer-value"]));
    assert_eq!(
        s.get("/subjects/customer-value/versions").await.1,
        json!([1])
    );
    let (status, body) = s.get("/subjects/orders-value/versions").await;
    assert_eq!((status, error_code(&body)), (StatusCode::NOT_FOUND, 40401));
    let (status, body) = s.get(&format!("/schemas/ids/{}", target_id + 1)).await;
    assert_eq!((status, error_code(&body)), (StatusCode::NOT_FOUND, 40403));

    // The same schema without references, as AVRO, is accepted: the refusals were
    // for the references and the types, not for the schema.
    for body in [
        json!({"schema": v1().to_string(), "references": []}),
        json!({"schema": v1().to_string(), "schemaType": "AVRO"}),
    ] {
        let (status, answer) = s
            .call(
                "POST",
                "/subjects/orders-value/versions",
                Some(body.clone()),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}: {answer}");
        assert_eq!(answer["id"].as_u64(), Some(target_id + 1), "{answer}");
    }
    assert_eq!(s.get("/subjects/orders-value/versions").await.1, json!([1]));
}

#[tokio::test]
async fn malformed_bodies_and_media_types_are_4xx() {
    let s = Server::memory().await;
    let post = |body: String, content_type: &'static str| {
        s.http
            .post(format!("{}/subjects/x-value/versions", s.base))
            .header("Content-Type", content_type)
            .body(body)
            .send()
    };
    let resp = post("{\"schema\": ".into(), V1).await.expect("send");
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert_eq!(error_code(&resp.json().await.expect("json")), 400);
    let resp = post("[1,2]".into(), V1).await.expect("send");
    assert_eq!(resp.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let resp = post(format!("{{\"schema\": \"{}\"}}", "x".repeat(200_000)), V1)
        .await
        .expect("send");
    assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(error_code(&resp.json().await.expect("json")), 413);
    let resp = post(
        json!({"schema": v1().to_string()}).to_string(),
        "text/plain",
    )
    .await
    .expect("send");
    assert_eq!(resp.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let resp = s
        .http
        .patch(format!("{}/subjects", s.base))
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(error_code(&resp.json().await.expect("json")), 405);
    assert_eq!(s.get("/subjects").await.1, json!([]));
}

#[tokio::test]
async fn every_content_type_is_accepted_and_answered() {
    let s = Server::memory().await;
    for (n, media) in [
        V1,
        "application/vnd.schemaregistry+json",
        "application/json",
    ]
    .into_iter()
    .enumerate()
    {
        let resp = s
            .http
            .post(format!("{}/subjects/m{n}-value/versions", s.base))
            .header("Content-Type", media)
            .header("Accept", media)
            .body(json!({"schema": v1().to_string()}).to_string())
            .send()
            .await
            .expect("send");
        assert_eq!(resp.status(), StatusCode::OK, "{media}");
        assert_eq!(resp.headers()["content-type"], media);
    }
    let resp = s
        .http
        .get(format!("{}/subjects", s.base))
        .send()
        .await
        .expect("send");
    assert_eq!(resp.headers()["content-type"], V1, "default answer type");
}

#[tokio::test]
async fn soft_and_permanent_deletes_follow_confluent() {
    let s = Server::memory().await;
    let id1 = s.register_ok("d-value", &v1()).await;
    s.register_ok("d-value", &v2()).await;

    // Versions: permanent before soft is refused; soft twice is refused.
    let (st, b) = s
        .call(
            "DELETE",
            "/subjects/d-value/versions/1?permanent=true",
            None,
        )
        .await;
    assert_eq!((st, error_code(&b)), (StatusCode::NOT_FOUND, 40407));
    assert_eq!(
        s.call("DELETE", "/subjects/d-value/versions/1", None).await,
        (StatusCode::OK, json!(1))
    );
    let (st, b) = s.call("DELETE", "/subjects/d-value/versions/1", None).await;
    assert_eq!((st, error_code(&b)), (StatusCode::NOT_FOUND, 40406));
    assert_eq!(s.get("/subjects/d-value/versions").await.1, json!([2]));
    assert_eq!(
        s.get("/subjects/d-value/versions?deleted=true").await.1,
        json!([1, 2])
    );
    assert_eq!(
        s.get("/subjects/d-value/versions/1").await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        s.get("/subjects/d-value/versions/1?deleted=true").await.1["id"],
        id1
    );
    assert_eq!(
        s.call(
            "DELETE",
            "/subjects/d-value/versions/1?permanent=true",
            None
        )
        .await,
        (StatusCode::OK, json!(1))
    );
    assert_eq!(
        s.get("/subjects/d-value/versions?deleted=true").await.1,
        json!([2])
    );
    // The id stays resolvable: data written with it still decodes.
    assert_eq!(
        s.get(&format!("/schemas/ids/{id1}")).await.0,
        StatusCode::OK
    );

    // Subjects: the same rules one level up.
    let (st, b) = s
        .call("DELETE", "/subjects/d-value?permanent=true", None)
        .await;
    assert_eq!((st, error_code(&b)), (StatusCode::NOT_FOUND, 40405));
    assert_eq!(
        s.call("DELETE", "/subjects/d-value", None).await,
        (StatusCode::OK, json!([2]))
    );
    let (st, b) = s.call("DELETE", "/subjects/d-value", None).await;
    assert_eq!((st, error_code(&b)), (StatusCode::NOT_FOUND, 40404));
    assert_eq!(s.get("/subjects").await.1, json!([]));
    assert_eq!(s.get("/subjects?deleted=true").await.1, json!(["d-value"]));
    assert_eq!(
        s.get("/subjects/d-value/versions").await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        s.call("DELETE", "/subjects/d-value?permanent=true", None)
            .await,
        (StatusCode::OK, json!([2]))
    );
    assert_eq!(s.get("/subjects?deleted=true").await.1, json!([]));
    let (st, b) = s.call("DELETE", "/subjects/d-value", None).await;
    assert_eq!((st, error_code(&b)), (StatusCode::NOT_FOUND, 40401));
}

#[tokio::test]
async fn config_global_and_per_subject() {
    let s = Server::memory().await;
    assert_eq!(
        s.get("/config").await.1,
        json!({"compatibilityLevel": "BACKWARD"})
    );
    assert_eq!(
        s.call("PUT", "/config", Some(json!({"compatibility": "full"})))
            .await,
        (StatusCode::OK, json!({"compatibility": "FULL"}))
    );
    assert_eq!(
        s.get("/config").await.1,
        json!({"compatibilityLevel": "FULL"})
    );
    assert_eq!(
        s.get("/config/c-value?defaultToGlobal=true").await.1,
        json!({"compatibilityLevel": "FULL"})
    );
    assert_eq!(
        s.call(
            "PUT",
            "/config/c-value",
            Some(json!({"compatibility": "NONE"}))
        )
        .await,
        (StatusCode::OK, json!({"compatibility": "NONE"}))
    );
    assert_eq!(
        s.get("/config/c-value").await.1,
        json!({"compatibilityLevel": "NONE"})
    );
    assert_eq!(
        s.call("DELETE", "/config/c-value", None).await,
        (StatusCode::OK, json!({"compatibilityLevel": "NONE"}))
    );
    let (st, b) = s.get("/config/c-value").await;
    assert_eq!((st, error_code(&b)), (StatusCode::NOT_FOUND, 40408));
    let (st, b) = s.call("DELETE", "/config/never-value", None).await;
    assert_eq!((st, error_code(&b)), (StatusCode::NOT_FOUND, 40401));
    assert_eq!(s.get("/mode").await.1, json!({"mode": "READWRITE"}));
}

#[tokio::test]
async fn compatibility_endpoints_and_enforcement() {
    let s = Server::memory().await;
    s.register_ok("c-value", &v1()).await;
    let required_field =
        record(json!([{"name": "a", "type": "string"}, {"name": "z", "type": "int"}]));
    let body = json!({"schema": required_field.to_string()});
    assert_eq!(
        s.call(
            "POST",
            "/compatibility/subjects/c-value/versions/latest",
            Some(body.clone())
        )
        .await,
        (StatusCode::OK, json!({"is_compatible": false}))
    );
    let (st, verbose) = s
        .call(
            "POST",
            "/compatibility/subjects/c-value/versions/latest?verbose=true",
            Some(body.clone()),
        )
        .await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(verbose["is_compatible"], false);
    let messages = verbose["messages"].as_array().expect("messages");
    assert!(
        messages
            .iter()
            .any(|m| m.as_str().expect("s").contains('z')),
        "{verbose}"
    );
    assert_eq!(
        s.call(
            "POST",
            "/compatibility/subjects/c-value/versions?verbose=true",
            Some(json!({"schema": v2().to_string()}))
        )
        .await,
        (
            StatusCode::OK,
            json!({"is_compatible": true, "messages": []})
        )
    );
    let (st, b) = s
        .call(
            "POST",
            "/compatibility/subjects/c-value/versions/9",
            Some(body.clone()),
        )
        .await;
    assert_eq!((st, error_code(&b)), (StatusCode::NOT_FOUND, 40402));
    let (st, b) = s
        .call(
            "POST",
            "/compatibility/subjects/none-value/versions/1",
            Some(body.clone()),
        )
        .await;
    assert_eq!((st, error_code(&b)), (StatusCode::NOT_FOUND, 40401));

    // Registration enforces the level: refused with 409, nothing stored.
    let (st, b) = s.register("c-value", &required_field).await;
    assert_eq!((st, error_code(&b)), (StatusCode::CONFLICT, 409));
    assert_eq!(s.get("/subjects/c-value/versions").await.1, json!([1]));
    s.set_subject_level("c-value", "NONE").await;
    assert_eq!(
        s.register("c-value", &required_field).await.0,
        StatusCode::OK
    );
}

/// The compatibility matrix, with the answers Confluent gives (Avro's resolution rules).
#[tokio::test]
async fn compatibility_matrix_matches_confluent() {
    let base = record(json!([
        {"name": "id", "type": "string"},
        {"name": "count", "type": "int"},
        {"name": "colour", "type": {"type": "enum", "name": "Colour", "symbols": ["RED", "GREEN"]}},
        {"name": "note", "type": "string", "default": ""}
    ]));
    let change = |f: &dyn Fn(&mut Vec<Value>)| {
        let mut s = base.clone();
        let fields = s["fields"].as_array_mut().expect("fields");
        f(fields);
        s
    };
    let optional_added =
        change(&|f| f.push(json!({"name": "extra", "type": ["null", "string"], "default": null})));
    let required_removed = change(&|f| {
        f.remove(1);
    });
    let int_to_long = change(&|f| f[1]["type"] = json!("long"));
    let enum_symbol_added = change(&|f| f[2]["type"]["symbols"] = json!(["RED", "GREEN", "BLUE"]));
    let renamed_with_alias =
        change(&|f| f[0] = json!({"name": "key", "type": "string", "aliases": ["id"]}));

    // (change, BACKWARD, FORWARD); FULL is both. Transitive levels agree on two versions.
    let matrix = [
        (
            "optional field with default added",
            &optional_added,
            true,
            true,
        ),
        (
            "field without default removed",
            &required_removed,
            true,
            false,
        ),
        ("int promoted to long", &int_to_long, true, false),
        ("enum symbol added", &enum_symbol_added, true, false),
        ("field renamed with alias", &renamed_with_alias, true, false),
    ];
    let s = Server::memory().await;
    for (n, (what, schema, backward, forward)) in matrix.into_iter().enumerate() {
        for level in [
            "NONE",
            "BACKWARD",
            "BACKWARD_TRANSITIVE",
            "FORWARD",
            "FORWARD_TRANSITIVE",
            "FULL",
            "FULL_TRANSITIVE",
        ] {
            let subject = format!("m{n}-{}", level.to_lowercase());
            s.register_ok(&subject, &base).await;
            s.set_subject_level(&subject, level).await;
            let expected = match level {
                "NONE" => true,
                l if l.starts_with("BACKWARD") => backward,
                l if l.starts_with("FORWARD") => forward,
                _ => backward && forward,
            };
            let (st, body) = s
                .call(
                    "POST",
                    &format!("/compatibility/subjects/{subject}/versions"),
                    Some(json!({"schema": schema.to_string()})),
                )
                .await;
            assert_eq!(st, StatusCode::OK);
            assert_eq!(body["is_compatible"], expected, "{what} under {level}");
            let (st, _) = s.register(&subject, schema).await;
            let want = if expected {
                StatusCode::OK
            } else {
                StatusCode::CONFLICT
            };
            assert_eq!(st, want, "registering: {what} under {level}");
        }
    }
}

#[tokio::test]
async fn transitive_levels_check_every_version() {
    let s = Server::memory().await;
    let a = record(json!([{"name": "x", "type": "int"}]));
    // b drops x (backward-compatible with a); c re-adds x as a string with no default.
    let b = record(json!([]));
    let c = record(json!([{"name": "x", "type": "string"}]));
    for (level, c_status) in [("BACKWARD", StatusCode::CONFLICT), ("NONE", StatusCode::OK)] {
        let subject = format!("t-{level}");
        s.set_subject_level(&subject, level).await;
        s.register_ok(&subject, &a).await;
        s.register_ok(&subject, &b).await;
        let (status, body) = s.register(&subject, &c).await;
        assert_eq!(status, c_status, "{level}: {body}");
    }
    // c with a default is backward-compatible with b (latest) but not with a (int → string).
    let c_default = record(json!([{"name": "x", "type": "string", "default": ""}]));
    let body = json!({"schema": c_default.to_string()});
    for (level, ok) in [("BACKWARD", true), ("BACKWARD_TRANSITIVE", false)] {
        let subject = format!("tt-{level}");
        s.set_subject_level(&subject, level).await;
        s.register_ok(&subject, &a).await;
        s.register_ok(&subject, &b).await;
        let path = format!("/compatibility/subjects/{subject}/versions");
        assert_eq!(
            s.call("POST", &path, Some(body.clone())).await.1["is_compatible"],
            ok,
            "{level}"
        );
    }
}

#[tokio::test]
async fn restart_keeps_subjects_versions_and_ids() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (id1, id2) = {
        let s = Server::start(Store::open(dir.path()).expect("open"), None).await;
        let id1 = s.register_ok("r-value", &v1()).await;
        let id2 = s.register_ok("r-value", &v2()).await;
        s.set_subject_level("r-value", "FULL").await;
        assert_eq!(
            s.call("DELETE", "/subjects/r-value/versions/1", None).await,
            (StatusCode::OK, json!(1)),
            "soft delete before the restart"
        );
        (id1, id2)
    };
    let s = Server::start(Store::open(dir.path()).expect("reopen"), None).await;
    assert_eq!(s.get("/subjects/r-value/versions").await.1, json!([2]));
    assert_eq!(
        s.get("/subjects/r-value/versions?deleted=true").await.1,
        json!([1, 2])
    );
    assert_eq!(s.get("/subjects/r-value/versions/2").await.1["id"], id2);
    assert_eq!(s.get(&format!("/schemas/ids/{id1}/schema")).await.1, v1());
    assert_eq!(
        s.get("/config/r-value").await.1,
        json!({"compatibilityLevel": "FULL"})
    );
    // New ids continue after the old ones, never reusing them.
    let id3 = s
        .register_ok(
            "other-value",
            &record(json!([{"name": "q", "type": "long"}])),
        )
        .await;
    assert!(id3 > id2, "{id3} after {id2}");
}

#[tokio::test]
async fn store_failure_is_50001_and_changes_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let s = Server::start(Store::open(&data).expect("open"), None).await;
    s.register_ok("f-value", &v1()).await;
    std::fs::remove_dir_all(&data).expect("pull the disk away");
    let (st, b) = s.register("f-value", &v2()).await;
    assert_eq!(
        (st, error_code(&b)),
        (StatusCode::INTERNAL_SERVER_ERROR, 50001)
    );
    assert_eq!(
        s.get("/subjects/f-value/versions").await.1,
        json!([1]),
        "memory unchanged"
    );
}

#[tokio::test]
async fn basic_auth_on_and_off() {
    let open = Server::memory().await;
    assert_eq!(open.get("/subjects").await.0, StatusCode::OK);

    let guarded = Server::start(Store::in_memory(), Some("opal:s3cret")).await;
    let (st, body) = guarded.get("/subjects").await;
    assert_eq!((st, error_code(&body)), (StatusCode::UNAUTHORIZED, 401));
    let url = format!("{}/subjects", guarded.base);
    let wrong = guarded
        .http
        .get(&url)
        .basic_auth("opal", Some("nope"))
        .send()
        .await
        .expect("send");
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    assert!(wrong.headers().contains_key("www-authenticate"));
    let right = guarded
        .http
        .get(&url)
        .basic_auth("opal", Some("s3cret"))
        .send()
        .await
        .expect("send");
    assert_eq!(right.status(), StatusCode::OK);
    assert!(format!("{:?}", BasicAuth::parse("opal:s3cret").expect("p")).contains("redacted"));
}
