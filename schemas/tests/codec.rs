//! The codec against a real registry (opal-registry in process): golden
//! fixtures of every schema version, typed errors, caching, and interop with
//! an unmodified Confluent client.

use std::sync::Arc;

use apache_avro::Schema;
use opal_registry::{Store, router, spawn};
use opal_schemas::codec::{WriterSchema, encode_with_id, reader_schema, split_wire_format};
use opal_schemas::samples::{example, example_envelope};
use opal_schemas::{
    Codec, CodecError, Event, EventType, RegistryClient, RegistryConfig, value_subject,
};

async fn start_registry() -> (String, tokio::task::JoinHandle<()>) {
    let app = router(Arc::new(Store::in_memory()), None, 1 << 20);
    let (addr, handle) = spawn("127.0.0.1:0", app).await.expect("registry");
    (format!("http://{addr}"), handle)
}

fn codec(url: &str) -> Codec {
    Codec::new(RegistryClient::new(RegistryConfig::new(url)).expect("client"))
}

/// Every schema version ever shipped, in registration order.
struct Version {
    event_type: EventType,
    version: i32,
    schema: &'static str,
}

fn all_versions() -> Vec<Version> {
    let mut out = Vec::new();
    for event_type in EventType::ALL {
        if event_type == EventType::AgentCompleted {
            out.push(Version {
                event_type,
                version: 1,
                schema: include_str!("../avro/history/agent_completed.v1.avsc"),
            });
        }
        let version = opal_schemas::samples::current_version(event_type);
        out.push(Version {
            event_type,
            version,
            schema: event_type.schema_json(),
        });
    }
    out
}

/// What data written with `v` reads as under today's reader schema.
fn expected(v: &Version) -> Event {
    let mut event = example(v.event_type, example_envelope(v.version));
    if let (Event::AgentCompleted(e), 1) = (&mut event, v.version) {
        e.model_version = None; // not in version 1: the reader's default
    }
    event
}

/// Writes `event` with an arbitrary (possibly historical) writer schema.
fn encode_as(event: &Event, schema_json: &str, id: u32) -> Vec<u8> {
    let schema = Schema::parse_str(schema_json).expect("schema");
    let value = event
        .to_avro()
        .expect("value")
        .resolve(&schema)
        .expect("resolves");
    let mut bytes = vec![0];
    bytes.extend_from_slice(&id.to_be_bytes());
    apache_avro::writer::datum::GenericDatumWriter::builder(&schema)
        .build()
        .and_then(|w| w.write_value(&mut bytes, value))
        .expect("write");
    bytes
}

#[tokio::test]
async fn golden_fixtures_of_every_version_decode_under_the_current_reader() {
    let (url, _server) = start_registry().await;
    let client = RegistryClient::new(RegistryConfig::new(&url)).expect("client");
    let codec = codec(&url);
    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures");
    let bless = std::env::var_os("OPAL_BLESS").is_some();
    for v in all_versions() {
        // Registering in order also proves each version is BACKWARD-compatible with the last.
        let id = client
            .register(&value_subject(v.event_type.topic()), v.schema)
            .await
            .expect("register");
        let file = fixtures.join(format!(
            "{}.v{}.bin",
            v.event_type.schema_file().trim_end_matches(".avsc"),
            v.version
        ));
        let written = encode_as(&expected(&v), v.schema, id);
        if bless {
            std::fs::write(&file, &written).expect("write fixture");
        }
        let golden = std::fs::read(&file)
            .unwrap_or_else(|e| panic!("{}: {e} (OPAL_BLESS=1 writes it)", file.display()));
        // Byte equality is not asserted: Avro maps are written in hash order.
        assert_eq!(golden[..5], written[..5], "{}: header", file.display());
        let decoded = codec
            .decode(&golden)
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        assert_eq!(decoded.schema_id, id);
        assert_eq!(decoded.event, expected(&v), "{}", file.display());
    }
}

/// The registry-free decode path (what the consumers run once the writer
/// schema is fetched, and what the fuzz target drives) reads every fixture.
#[test]
fn writer_schemas_decode_the_fixtures_without_a_registry() {
    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures");
    for v in all_versions() {
        let file = fixtures.join(format!(
            "{}.v{}.bin",
            v.event_type.schema_file().trim_end_matches(".avsc"),
            v.version
        ));
        let golden = std::fs::read(&file).expect("fixture");
        let (id, body) = split_wire_format(&golden).expect("header");
        let writer = WriterSchema::parse(id, v.schema).expect("writer");
        assert_eq!(writer.event_type(), v.event_type);
        let decoded = writer.decode(body).expect("decodes");
        assert_eq!((decoded.schema_id, decoded.event), (id, expected(&v)));
    }
    let foreign = r#"{"type":"record","name":"x.Y","fields":[]}"#;
    assert!(matches!(
        WriterSchema::parse(7, foreign),
        Err(CodecError::ForeignSchema { schema_id: 7, .. })
    ));
}

#[tokio::test]
async fn encode_uses_the_registered_id_and_decodes_back() {
    let (url, _server) = start_registry().await;
    let codec = codec(&url);
    let event = example(EventType::FeedbackSubmitted, example_envelope(1));
    let topic = "t1.opal.feedback.submitted";
    match codec.encode(&event, topic).await {
        Err(CodecError::SchemaNotRegistered(subject)) => assert_eq!(subject, value_subject(topic)),
        other => panic!("expected SchemaNotRegistered, got {other:?}"),
    }
    let codec = codec.with_auto_register(true);
    let (bytes, id) = codec.encode(&event, topic).await.expect("auto-registers");
    assert_eq!(&bytes[1..5], &id.to_be_bytes());
    assert_eq!(codec.decode(&bytes).await.expect("decode").event, event);
}

/// A bad input, its bytes, and what the decoder must say about it.
type BadInput = (&'static str, Vec<u8>, fn(&CodecError) -> bool);

#[tokio::test]
async fn undecodable_bytes_get_typed_errors() {
    let (url, _server) = start_registry().await;
    let client = RegistryClient::new(RegistryConfig::new(&url)).expect("client");
    let codec = codec(&url);
    let event = example(EventType::WorkflowCompleted, example_envelope(1));
    let id = client
        .register("w-value", EventType::WorkflowCompleted.schema_json())
        .await
        .expect("register");
    let good = encode_with_id(&event, id);
    let foreign = r#"{"type":"record","name":"Other","namespace":"elsewhere","fields":[{"name":"x","type":"long"}]}"#;
    let foreign_id = client
        .register("other-value", foreign)
        .await
        .expect("register");

    let cases: Vec<BadInput> = vec![
        ("empty", vec![], |e| {
            matches!(e, CodecError::NotWireFormat(_))
        }),
        ("too short", vec![0, 0, 1], |e| {
            matches!(e, CodecError::NotWireFormat(_))
        }),
        ("bad magic byte", [&[1u8][..], &good[1..]].concat(), |e| {
            matches!(e, CodecError::NotWireFormat(_))
        }),
        (
            "unknown schema id",
            [&[0u8, 0, 0, 0x30, 0x39][..], &good[5..]].concat(),
            |e| matches!(e, CodecError::UnknownSchemaId(12345)),
        ),
        ("truncated Avro", good[..good.len() - 3].to_vec(), |e| {
            matches!(e, CodecError::CorruptAvro { .. })
        }),
        (
            "trailing garbage",
            [&good[..], &[1, 2, 3][..]].concat(),
            |e| matches!(e, CodecError::CorruptAvro { .. }),
        ),
        (
            "another schema's Avro",
            [&[0u8][..], &foreign_id.to_be_bytes(), &[4u8][..]].concat(),
            |e| matches!(e, CodecError::ForeignSchema { .. }),
        ),
    ];
    for (what, bytes, expected) in cases {
        let err = codec.decode(&bytes).await.expect_err(what);
        assert!(expected(&err), "{what}: got {err:?}");
        assert!(
            err.is_undecodable() && !err.is_dependency_down(),
            "{what}: classified undecodable"
        );
    }
    assert_eq!(
        codec.decode(&good).await.expect("good still decodes").event,
        event
    );
}

#[tokio::test]
async fn registry_down_is_a_dependency_error_never_cached_and_writers_are_cached() {
    // A port with nothing listening, then a registry on that same port.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("port")
        .local_addr()
        .expect("addr")
        .port();
    let url = format!("http://127.0.0.1:{port}");
    let codec = codec(&url);
    let event = example(EventType::KnowledgeUpserted, example_envelope(1));
    let bytes = encode_with_id(&event, 1);
    let err = codec.decode(&bytes).await.expect_err("registry down");
    assert!(err.is_dependency_down() && !err.is_undecodable(), "{err:?}");

    let app = router(Arc::new(Store::in_memory()), None, 1 << 20);
    let (_, server) = spawn(&format!("127.0.0.1:{port}"), app)
        .await
        .expect("registry on the same port");
    let client = RegistryClient::new(RegistryConfig::new(&url)).expect("client");
    assert_eq!(
        client
            .register("k-value", EventType::KnowledgeUpserted.schema_json())
            .await
            .expect("reg"),
        1
    );
    assert_eq!(
        codec
            .decode(&bytes)
            .await
            .expect("the failure was not cached")
            .event,
        event
    );

    // With the registry gone again, the cached writer schema still decodes.
    server.abort();
    let _ = server.await;
    assert_eq!(
        codec
            .decode(&bytes)
            .await
            .expect("served from the cache")
            .event,
        event
    );
}

#[tokio::test]
async fn interoperates_with_schema_registry_converter() {
    use schema_registry_converter::async_impl::avro::{AvroDecoder, AvroEncoder};
    use schema_registry_converter::async_impl::schema_registry::SrSettings;
    use schema_registry_converter::schema_registry_common::SubjectNameStrategy;

    let (url, _server) = start_registry().await;
    let codec = codec(&url).with_auto_register(true);
    let event = example(EventType::DecisionGenerated, example_envelope(1));
    let (ours, _) = codec
        .encode(&event, "opal.decision.generated")
        .await
        .expect("encode");

    // Confluent-style client decodes ours...
    let theirs_decoded = AvroDecoder::new(SrSettings::new(url.clone()))
        .decode(Some(&ours))
        .await
        .expect("decode");
    let expected = event
        .to_avro()
        .expect("value")
        .resolve(reader_schema(EventType::DecisionGenerated))
        .expect("resolve");
    assert_eq!(theirs_decoded.value, expected);

    // ...and we decode what it encodes (it looks the schema up by subject).
    let Value::Record(fields) = expected else {
        panic!("record")
    };
    let fields: Vec<(&str, Value)> = fields
        .iter()
        .map(|(k, v)| (k.as_str(), v.clone()))
        .collect();
    let theirs = AvroEncoder::new(SrSettings::new(url))
        .encode(
            fields,
            SubjectNameStrategy::TopicNameStrategy("opal.decision.generated".into(), false),
        )
        .await
        .expect("their encode");
    assert_eq!(
        codec.decode(&theirs).await.expect("our decode").event,
        event
    );
}

use apache_avro::types::Value;

/// The encoder writes with serde straight to bytes; it must produce what the
/// generic path (typed → Value → resolve → write) produces and read back equal.
#[test]
fn direct_encoding_matches_the_generic_path_and_round_trips() {
    for event_type in EventType::ALL {
        let mut events = vec![opal_schemas::samples::default_example(event_type)];
        // Optional fields both absent and present, and an enum other than the first symbol.
        let mut other = events[0].clone();
        match &mut other {
            Event::AgentCompleted(e) => {
                e.error = Some("timeout".into());
                e.model_version = None;
                e.execution_status = opal_schemas::ExecutionStatus::Timeout;
            }
            Event::FeedbackSubmitted(e) => e.comment = None,
            Event::ForecastGenerated(e) => e.mae = None,
            _ => {}
        }
        events.push(other);
        for event in events {
            let direct = encode_with_id(&event, 7);
            let generic = encode_as(&event, event_type.schema_json(), 7);
            assert_eq!(direct.len(), generic.len(), "{event_type:?}: same size");
            if !format!("{:?}", event.to_avro().expect("value")).contains("Map(") {
                // Maps are written in hash order, so only map-free events compare bytewise.
                assert_eq!(direct, generic, "{event_type:?}: same bytes");
            }
            let schema = reader_schema(event_type);
            let mut body = &direct[5..];
            let value = apache_avro::reader::datum::GenericDatumReader::builder(schema)
                .build()
                .and_then(|r| r.read_value(&mut body))
                .expect("reads back");
            assert!(body.is_empty(), "{event_type:?}: nothing left over");
            assert_eq!(
                Event::from_avro(event_type, &value).expect("typed"),
                event,
                "{event_type:?}"
            );
        }
    }
}
