//! (b) The registry's schema parsing (what registration applies) and its
//! compatibility check, on arbitrary pairs of schema texts. Input: the two
//! texts separated by one 0xFF byte (never part of UTF-8 text).
//!
//! Beyond "no panic": a schema the registry accepts must parse again from the
//! minified text it stores (the store re-parses it for every later check).
#![no_main]

use libfuzzer_sys::fuzz_target;
use opal_registry::{CompatibilityLevel, ParsedSchema, check_compatibility};

fuzz_target!(|bytes: &[u8]| {
    let mut parts = bytes.splitn(2, |b| *b == 0xFF);
    let first = parts.next().unwrap_or_default();
    let second = parts.next().unwrap_or(first);
    let (Ok(first), Ok(second)) = (std::str::from_utf8(first), std::str::from_utf8(second)) else {
        return;
    };
    let (Ok(earlier), Ok(candidate)) = (ParsedSchema::parse(first), ParsedSchema::parse(second))
    else {
        return;
    };
    for parsed in [&earlier, &candidate] {
        if let Err(e) = ParsedSchema::parse(&parsed.text) {
            panic!("stored text {} no longer parses: {e}", parsed.text);
        }
    }
    // Full checks both directions against the latest; the transitive form walks a history.
    check_compatibility(
        &candidate.avro,
        std::slice::from_ref(&earlier.avro),
        CompatibilityLevel::Full,
    );
    check_compatibility(
        &earlier.avro,
        &[candidate.avro.clone(), earlier.avro.clone()],
        CompatibilityLevel::FullTransitive,
    );
});
