//! Codec microbenchmarks: encode and decode per event, for a small, a typical
//! and a large event. Decoding goes through `Codec::decode` with the writer
//! schema already cached (as in steady state), so the registry at
//! SCHEMA_REGISTRY_URL is asked once per schema, before measuring.

use criterion::{Criterion, criterion_group, criterion_main};
use opal_bench::report::codec_events;
use opal_schemas::codec::encode_with_id;
use opal_schemas::{Codec, RegistryClient, RegistryConfig};

fn codec(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let url =
        std::env::var("SCHEMA_REGISTRY_URL").unwrap_or_else(|_| "http://127.0.0.1:8081".to_owned());
    let registry = RegistryClient::new(RegistryConfig::new(url)).expect("registry client");
    let codec = Codec::new(registry).with_auto_register(true);
    let prefix = format!("bench-codec-{}.", std::process::id());

    let mut encode = c.benchmark_group("encode");
    let mut encoded = Vec::new();
    for (name, event) in codec_events() {
        let topic = format!("{prefix}{}", event.event_type().topic());
        let (bytes, id) = runtime
            .block_on(codec.encode(&event, &topic))
            .expect("encode through the registry (is the stack up?)");
        encode.bench_function(name, |b| {
            b.iter(|| encode_with_id(std::hint::black_box(&event), id))
        });
        encoded.push((name, bytes));
    }
    encode.finish();

    let mut decode = c.benchmark_group("decode");
    for (name, bytes) in &encoded {
        runtime.block_on(codec.decode(bytes)).expect("first decode");
        decode.bench_function(*name, |b| {
            b.iter(|| {
                runtime
                    .block_on(codec.decode(std::hint::black_box(bytes)))
                    .expect("decode")
            })
        });
    }
    decode.finish();
}

criterion_group!(benches, codec);
criterion_main!(benches);
