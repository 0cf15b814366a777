//! Avro's binary encoding of the types our schemas use, written out for our
//! records: a record is its fields in schema order, nothing else.
//!
//! Generic Avro libraries walk a parsed schema for every datum: apache-avro
//! through a `Value` tree (about 35 000 instructions to read one
//! `agent.completed`, 14 000 to write it), serde_avro_fast through serde's
//! field names (7 000 and 5 000: every field is matched by name, every enum
//! symbol and union branch looked up in a hash map). Our layouts are fixed at
//! build time, so `layout` lists each record's fields once and the readers
//! and writers follow that list. They serve only data written with our
//! current schemas (the codec checks the writer schema's canonical form);
//! older writer schemas go through apache-avro's resolution. Tests compare
//! the bytes with apache-avro's for every event type and both branches of
//! every union.
//!
//! Reading is defensive, as it runs on bytes from the wire: every length is
//! checked against what is left before anything is allocated.

use std::collections::BTreeMap;
use std::fmt;

/// Why a body could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ReadError(String);

impl fmt::Display for ReadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ReadError {}

impl ReadError {
    pub(crate) fn left_over(bytes: usize) -> Self {
        error(format!("{bytes} byte(s) left over after the record"))
    }
}

#[cold]
fn error(reason: impl Into<String>) -> ReadError {
    ReadError(reason.into())
}

/// The unread rest of one body.
pub(crate) struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(crate) fn new(body: &'a [u8]) -> Self {
        Reader { rest: body }
    }

    /// Bytes not read yet.
    pub(crate) fn remaining(&self) -> usize {
        self.rest.len()
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], ReadError> {
        if n > self.rest.len() {
            return Err(error(format!(
                "{n} byte(s) expected, {} left",
                self.rest.len()
            )));
        }
        let (taken, rest) = self.rest.split_at(n);
        self.rest = rest;
        Ok(taken)
    }

    /// A zig-zag varint `long`.
    pub(crate) fn long(&mut self) -> Result<i64, ReadError> {
        let mut value: u64 = 0;
        for (i, shift) in (0..64).step_by(7).enumerate() {
            let Some((&byte, rest)) = self.rest.split_first() else {
                return Err(error("a varint runs past the end of the body"));
            };
            self.rest = rest;
            if i == 9 && byte > 1 {
                return Err(error("a varint overflows 64 bits"));
            }
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok((value >> 1) as i64 ^ -((value & 1) as i64));
            }
        }
        Err(error("a varint is longer than 10 bytes"))
    }

    /// A length (string bytes) or a count (array and map blocks): not
    /// negative, and at most the bytes left, since every item takes one.
    fn length(&mut self, what: &str) -> Result<usize, ReadError> {
        let n = self.long()?;
        if n < 0 || n as u64 > self.rest.len() as u64 {
            return Err(error(format!(
                "{what} {n} out of range ({} byte(s) left)",
                self.rest.len()
            )));
        }
        Ok(n as usize)
    }

    /// The item count of the next array or map block; 0 ends the array.
    fn block(&mut self) -> Result<usize, ReadError> {
        let n = self.long()?;
        if n < 0 {
            // A negative count is followed by the block's size in bytes (unused here).
            self.long()?;
        }
        let count = n.unsigned_abs();
        if count > self.rest.len() as u64 {
            return Err(error(format!(
                "block of {count} item(s) with {} byte(s) left",
                self.rest.len()
            )));
        }
        Ok(count as usize)
    }

    /// An array's or map's blocks up to the empty block that ends it: `item`
    /// reads each item.
    fn blocks(
        &mut self,
        mut item: impl FnMut(&mut Self) -> Result<(), ReadError>,
    ) -> Result<(), ReadError> {
        loop {
            let count = self.block()?;
            if count == 0 {
                return Ok(());
            }
            for _ in 0..count {
                item(self)?;
            }
        }
    }

    /// A union branch or enum symbol index, below `len`.
    pub(crate) fn index(&mut self, len: usize, what: &str) -> Result<usize, ReadError> {
        let i = self.long()?;
        usize::try_from(i)
            .ok()
            .filter(|i| *i < len)
            .ok_or_else(|| error(format!("{what} index {i} out of range (0..{len})")))
    }
}

/// Writes a zig-zag varint `long`.
pub(crate) fn write_long(value: i64, out: &mut Vec<u8>) {
    let mut n = ((value << 1) ^ (value >> 63)) as u64;
    while n >= 0x80 {
        out.push(n as u8 | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

/// An array's or map's items as one block, then the empty block that ends it
/// (as apache-avro writes them; no items is the empty block alone).
fn write_blocks<I: ExactSizeIterator>(
    items: I,
    out: &mut Vec<u8>,
    mut item: impl FnMut(I::Item, &mut Vec<u8>),
) {
    if items.len() > 0 {
        write_long(items.len() as i64, out);
        for i in items {
            item(i, out);
        }
    }
    out.push(0);
}

/// A value of one of our schemas' types.
pub(crate) trait AvroBinary: Sized {
    fn write(&self, out: &mut Vec<u8>);
    fn read(r: &mut Reader<'_>) -> Result<Self, ReadError>;
}

impl AvroBinary for i64 {
    fn write(&self, out: &mut Vec<u8>) {
        write_long(*self, out);
    }
    fn read(r: &mut Reader<'_>) -> Result<Self, ReadError> {
        r.long()
    }
}

impl AvroBinary for i32 {
    fn write(&self, out: &mut Vec<u8>) {
        write_long(i64::from(*self), out);
    }
    fn read(r: &mut Reader<'_>) -> Result<Self, ReadError> {
        let n = r.long()?;
        i32::try_from(n).map_err(|_| error(format!("int {n} out of range")))
    }
}

impl AvroBinary for f64 {
    fn write(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.to_le_bytes());
    }
    fn read(r: &mut Reader<'_>) -> Result<Self, ReadError> {
        let bytes = r.take(8)?;
        let mut le = [0; 8];
        le.copy_from_slice(bytes);
        Ok(f64::from_le_bytes(le))
    }
}

impl AvroBinary for bool {
    fn write(&self, out: &mut Vec<u8>) {
        out.push(u8::from(*self));
    }
    fn read(r: &mut Reader<'_>) -> Result<Self, ReadError> {
        match r.take(1)?[0] {
            0 => Ok(false),
            1 => Ok(true),
            b => Err(error(format!("boolean byte {b}"))),
        }
    }
}

impl AvroBinary for String {
    fn write(&self, out: &mut Vec<u8>) {
        write_long(self.len() as i64, out);
        out.extend_from_slice(self.as_bytes());
    }
    fn read(r: &mut Reader<'_>) -> Result<Self, ReadError> {
        let n = r.length("string length")?;
        let bytes = r.take(n)?;
        std::str::from_utf8(bytes)
            .map(str::to_owned)
            .map_err(|e| error(format!("string is not UTF-8: {e}")))
    }
}

/// Our optional fields are `["null", T]` unions.
impl<T: AvroBinary> AvroBinary for Option<T> {
    fn write(&self, out: &mut Vec<u8>) {
        match self {
            None => out.push(0),
            Some(value) => {
                out.push(2); // branch 1, zig-zag
                value.write(out);
            }
        }
    }
    fn read(r: &mut Reader<'_>) -> Result<Self, ReadError> {
        match r.index(2, "union branch")? {
            0 => Ok(None),
            _ => T::read(r).map(Some),
        }
    }
}

impl<T: AvroBinary> AvroBinary for Vec<T> {
    fn write(&self, out: &mut Vec<u8>) {
        write_blocks(self.iter(), out, |item, out| item.write(out));
    }
    fn read(r: &mut Reader<'_>) -> Result<Self, ReadError> {
        let mut items = Vec::new();
        r.blocks(|r| {
            items.push(T::read(r)?);
            Ok(())
        })?;
        Ok(items)
    }
}

/// A map of strings, in key order.
impl AvroBinary for BTreeMap<String, String> {
    fn write(&self, out: &mut Vec<u8>) {
        write_blocks(self.iter(), out, |(key, value), out| {
            key.write(out);
            value.write(out);
        });
    }
    fn read(r: &mut Reader<'_>) -> Result<Self, ReadError> {
        let mut map = BTreeMap::new();
        r.blocks(|r| {
            let key = String::read(r)?;
            map.insert(key, String::read(r)?);
            Ok(())
        })?;
        Ok(map)
    }
}

/// An Avro enum: the variants in the order of the schema's symbols (a test
/// checks them against the `.avsc` files).
macro_rules! avro_enum {
    ($( $ty:ident [ $( $variant:ident ),* $(,)? ] )*) => {
        $(
            impl $ty {
                /// Every variant, in schema symbol order.
                pub const SYMBOL_ORDER: &[$ty] = &[ $( $ty::$variant ),* ];
            }

            impl $crate::binary::AvroBinary for $ty {
                fn write(&self, out: &mut Vec<u8>) {
                    let index = Self::SYMBOL_ORDER.iter().position(|v| v == self).unwrap_or_default();
                    $crate::binary::write_long(index as i64, out);
                }
                fn read(r: &mut $crate::binary::Reader<'_>) -> Result<Self, $crate::binary::ReadError> {
                    Ok(Self::SYMBOL_ORDER[r.index(Self::SYMBOL_ORDER.len(), stringify!($ty))?])
                }
            }
        )*
    };
}
pub(crate) use avro_enum;

/// An Avro record: the fields in schema order. Writing destructures and
/// reading builds a struct literal, so a field missing here fails to compile.
macro_rules! avro_record {
    ($( $ty:ident { $( $field:ident ),* $(,)? } )*) => {
        $(
            impl $crate::binary::AvroBinary for $ty {
                fn write(&self, out: &mut Vec<u8>) {
                    let $ty { $( $field ),* } = self;
                    $( $field.write(out); )*
                }
                fn read(r: &mut $crate::binary::Reader<'_>) -> Result<Self, $crate::binary::ReadError> {
                    Ok($ty { $( $field: $crate::binary::AvroBinary::read(r)? ),* })
                }
            }
        )*
    };
}
pub(crate) use avro_record;

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip<T: AvroBinary + PartialEq + fmt::Debug>(value: T) -> Vec<u8> {
        let mut out = Vec::new();
        value.write(&mut out);
        let mut r = Reader::new(&out);
        assert_eq!(T::read(&mut r).expect("reads back"), value);
        assert_eq!(r.remaining(), 0);
        out
    }

    #[test]
    fn longs_are_zig_zag_varints() {
        assert_eq!(round_trip(0i64), [0]);
        assert_eq!(round_trip(-1i64), [1]);
        assert_eq!(round_trip(1i64), [2]);
        assert_eq!(round_trip(-64i64), [0x7f]);
        assert_eq!(round_trip(64i64), [0x80, 0x01]);
        assert_eq!(round_trip(i64::MAX).len(), 10);
        assert_eq!(round_trip(i64::MIN).len(), 10);
        round_trip(i32::MIN);
        round_trip(i32::MAX);
    }

    #[test]
    fn bad_bytes_are_errors_not_panics_or_huge_allocations() {
        let read = |bytes: &[u8]| String::read(&mut Reader::new(bytes)).map_err(|e| e.to_string());
        assert!(read(&[]).expect_err("an error").contains("past the end"));
        // Length 2^62: refused before allocating.
        let mut huge = Vec::new();
        write_long(1 << 62, &mut huge);
        assert!(read(&huge).expect_err("an error").contains("out of range"));
        assert!(
            read(&[1])
                .expect_err("an error")
                .contains("-1 out of range")
        );
        assert!(
            read(&[4, 0xff, 0xfe])
                .expect_err("an error")
                .contains("UTF-8")
        );
        assert!(read(&[0xff; 11]).is_err());
        let int = i32::read(&mut Reader::new(&huge)).expect_err("an error");
        assert!(int.to_string().contains("int"), "{int}");
        let union = Option::<i64>::read(&mut Reader::new(&[4])).expect_err("an error");
        assert!(
            union.to_string().contains("union branch index 2"),
            "{union}"
        );
        let array = Vec::<i64>::read(&mut Reader::new(&[0x7e, 0])).expect_err("an error");
        assert!(array.to_string().contains("block of 63"), "{array}");
    }

    #[test]
    fn arrays_may_come_in_several_blocks_and_negative_counts() {
        // Two blocks (2 items, then -1 item with its byte size), then the end.
        let bytes = [4, 2, 4, 1, 2, 6, 0];
        let items = Vec::<i64>::read(&mut Reader::new(&bytes)).expect("reads");
        assert_eq!(items, [1, 2, 3]);
        assert_eq!(round_trip(Vec::<i64>::new()), [0]);
    }
}
