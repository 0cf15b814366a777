//! The Rust types and the `.avsc` files agree, field for field, and every
//! schema follows the catalog's rules (namespace, envelope, docs, logical types).

use std::collections::BTreeSet;

use opal_schemas::codec::{encode_with_id, split_wire_format};
use opal_schemas::samples::default_example;
use opal_schemas::{Event, EventType};
use serde_json::Value;

fn avsc(event_type: EventType) -> Value {
    serde_json::from_str(event_type.schema_json()).expect("schema is JSON")
}

/// Field names of a record schema, and of every nested record, as dotted paths.
fn schema_paths(schema: &Value, prefix: &str, out: &mut BTreeSet<String>) {
    match schema {
        Value::Object(o) if o.get("type") == Some(&Value::from("record")) => {
            for field in o["fields"].as_array().expect("fields") {
                let path = format!("{prefix}{}", field["name"].as_str().expect("name"));
                out.insert(path.clone());
                schema_paths(&field["type"], &format!("{path}."), out);
            }
        }
        Value::Object(o) if o.get("type") == Some(&Value::from("array")) => {
            schema_paths(&o["items"], prefix, out)
        }
        Value::Array(branches) => branches.iter().for_each(|b| schema_paths(b, prefix, out)),
        _ => {}
    }
}

/// Field names of a serialised Rust value, as dotted paths (maps are leaves).
fn value_paths(
    value: &Value,
    prefix: &str,
    map_fields: &BTreeSet<String>,
    out: &mut BTreeSet<String>,
) {
    match value {
        Value::Object(o) => {
            for (k, v) in o {
                let path = format!("{prefix}{k}");
                out.insert(path.clone());
                if !map_fields.contains(&path) {
                    value_paths(v, &format!("{path}."), map_fields, out);
                }
            }
        }
        Value::Array(items) => items
            .iter()
            .for_each(|i| value_paths(i, prefix, map_fields, out)),
        _ => {}
    }
}

#[test]
fn rust_types_and_avsc_files_have_the_same_fields() {
    for event_type in EventType::ALL {
        let mut from_schema = BTreeSet::new();
        schema_paths(&avsc(event_type), "", &mut from_schema);
        let maps: BTreeSet<String> = ["preferences".to_owned()].into();
        let mut from_rust = BTreeSet::new();
        value_paths(
            &default_example(event_type).to_json(),
            "",
            &maps,
            &mut from_rust,
        );
        assert_eq!(
            from_rust, from_schema,
            "{event_type}: Rust fields vs .avsc fields"
        );
    }
}

#[test]
fn every_example_round_trips_through_its_schema() {
    for event_type in EventType::ALL {
        let event = default_example(event_type);
        let bytes = encode_with_id(&event, 7);
        let (id, body) = split_wire_format(&bytes).expect("wire format");
        assert_eq!(id, 7);
        let schema = opal_schemas::codec::reader_schema(event_type);
        let value = apache_avro::reader::datum::GenericDatumReader::builder(schema)
            .build()
            .and_then(|r| r.read_value(&mut &body[..]))
            .expect("decodes with its own schema");
        assert_eq!(
            Event::from_avro(event_type, &value).expect("typed"),
            event,
            "{event_type}"
        );
    }
}

#[test]
fn schemas_follow_the_catalog_rules() {
    let envelope = opal_schemas::events::ENVELOPE_FIELDS;
    for event_type in EventType::ALL {
        let schema = avsc(event_type);
        assert_eq!(schema["namespace"], "opal.events", "{event_type}");
        assert_eq!(
            format!("opal.events.{}", schema["name"].as_str().expect("name")),
            event_type.full_name()
        );
        let fields = schema["fields"].as_array().expect("fields");
        let names: Vec<&str> = fields
            .iter()
            .map(|f| f["name"].as_str().expect("name"))
            .collect();
        assert_eq!(&names[..6], envelope, "{event_type}: envelope first");
        assert!(
            names.contains(&event_type.key_field()),
            "{event_type}: key field present"
        );
        assert_eq!(
            fields[3]["type"]["logicalType"], "timestamp-millis",
            "{event_type}: event time"
        );
        assert_eq!(
            fields[5]["type"]["symbols"],
            serde_json::json!(["development", "staging", "production"])
        );
        let mut undocumented = Vec::new();
        every_field(&schema, &mut |f: &Value| {
            if f["doc"].as_str().is_none_or(str::is_empty) {
                undocumented.push(f["name"].to_string());
            }
        });
        assert!(
            undocumented.is_empty(),
            "{event_type}: fields without doc: {undocumented:?}"
        );
    }
}

fn every_field(schema: &Value, visit: &mut dyn FnMut(&Value)) {
    match schema {
        Value::Object(o) if o.get("fields").is_some() => {
            for f in o["fields"].as_array().expect("fields") {
                visit(f);
                every_field(&f["type"], visit);
            }
        }
        Value::Object(o) if o.get("items").is_some() => every_field(&o["items"], visit),
        Value::Array(branches) => branches.iter().for_each(|b| every_field(b, visit)),
        _ => {}
    }
}

#[test]
fn event_types_parse_from_names_topics_and_files() {
    for event_type in EventType::ALL {
        for spelling in [
            event_type.name(),
            event_type.topic(),
            event_type.schema_file().trim_end_matches(".avsc"),
        ] {
            assert_eq!(spelling.parse::<EventType>(), Ok(event_type));
        }
    }
    let err = "nope".parse::<EventType>().expect_err("unknown");
    assert!(err.contains("workflow.started"), "{err}");
}
