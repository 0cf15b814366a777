//! An unmodified Confluent client (schema_registry_converter) against the registry.

use std::sync::Arc;

use apache_avro::types::Value;
use opal_registry::{BasicAuth, Store, router, spawn};
use schema_registry_converter::async_impl::avro::{AvroDecoder, AvroEncoder};
use schema_registry_converter::async_impl::schema_registry::SrSettings;
use schema_registry_converter::schema_registry_common::{
    RawError, SchemaType, SubjectNameStrategy, SuppliedSchema,
};

const SCHEMA: &str = r#"{"type":"record","name":"Heartbeat","namespace":"opal.test","fields":[{"name":"beat","type":"long"},{"name":"who","type":"string"}]}"#;

async fn round_trip(settings: SrSettings) {
    let encoder = AvroEncoder::new(settings.clone());
    let strategy = SubjectNameStrategy::TopicNameStrategyWithSchema(
        "heartbeat".to_owned(),
        false,
        SuppliedSchema::new(None, SchemaType::Avro, SCHEMA.to_owned()),
    );
    let bytes = encoder
        .encode(
            vec![
                ("beat", Value::Long(42)),
                ("who", Value::String("opal".into())),
            ],
            strategy,
        )
        .await
        .expect("encode registers the schema and encodes");
    assert_eq!(bytes[0], 0, "magic byte");
    let id = u32::from_be_bytes(bytes[1..5].try_into().expect("4 bytes"));
    assert_eq!(id, 1);

    let decoder = AvroDecoder::new(settings);
    let decoded = decoder
        .decode(Some(&bytes))
        .await
        .expect("decode fetches the schema by id");
    assert_eq!(
        decoded.value,
        Value::Record(vec![
            ("beat".into(), Value::Long(42)),
            ("who".into(), Value::String("opal".into()))
        ])
    );
}

#[tokio::test]
async fn encode_and_decode_through_the_registry() {
    let (addr, _) = spawn(
        "127.0.0.1:0",
        router(Arc::new(Store::in_memory()), None, 1 << 20),
    )
    .await
    .expect("bind");
    round_trip(SrSettings::new(format!("http://{addr}"))).await;
}

#[tokio::test]
async fn encode_and_decode_with_basic_auth() {
    let auth = BasicAuth::parse("sr:pw").expect("auth");
    let (addr, _) = spawn(
        "127.0.0.1:0",
        router(Arc::new(Store::in_memory()), Some(auth), 1 << 20),
    )
    .await
    .expect("bind");
    let settings = SrSettings::new_builder(format!("http://{addr}"))
        .set_basic_authorization("sr", Some("pw"))
        .build()
        .expect("settings");
    round_trip(settings).await;

    // Without credentials the client gets the registry's 401, in Confluent's shape,
    // for the schema (id 1) that exists: no other failure will do.
    let unauthenticated = AvroDecoder::new(SrSettings::new(format!("http://{addr}")));
    let err = match unauthenticated
        .decode(Some(&[0, 0, 0, 0, 1, 84, 8, 111, 112, 97, 108]))
        .await
    {
        Ok(decoded) => panic!("decoded without credentials: {:?}", decoded.value),
        Err(err) => err,
    };
    assert_eq!(
        err.error, "HTTP request to schema registry failed with status 401 Unauthorized",
        "{err}"
    );
    assert!(!err.retriable, "a refusal is not transient: {err}");
    let raw = std::error::Error::source(&err)
        .and_then(|source| source.downcast_ref::<RawError>())
        .unwrap_or_else(|| panic!("no registry error body behind {err}"));
    assert_eq!(
        (raw.error_code, raw.message.as_str()),
        (401, "Unauthorized"),
        "{err}"
    );
}
