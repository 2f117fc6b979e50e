//! Arbitrary values of any serde type, built from a byte string: a lenient [`serde::Deserializer`]
//! that never fails for lack of structure. Where bincode reads a variant index, a length or a
//! string from the bytes and refuses what does not fit, this one takes each choice modulo what
//! the type allows (variant index modulo the number of variants, short lengths, valid chars), and
//! reads zeros past the end. So every byte string is some value of the type, and a property test
//! or a fuzz target can cover every variant of every request without a hand-written strategy
//! per type — and keeps covering the variants added later.
//!
//! Used by the round-trip property tests of `tests/hostile/t30_decode.rs` and by the
//! `round_trip` fuzz target.

use serde::de::{
    self, DeserializeOwned, DeserializeSeed, EnumAccess, IntoDeserializer, MapAccess, SeqAccess,
    VariantAccess, Visitor,
};

/// Nesting beyond which sequences and maps are empty and options `None`, so values stay small.
const DEPTH_MAX: usize = 6;

/// The value of `T` that `entropy` describes. Fails only where `T`'s own `Deserialize` refuses
/// a value (validation in a hand-written impl) or needs a self-describing format.
pub fn value<T: DeserializeOwned>(entropy: &[u8]) -> Result<T, de::value::Error> {
    T::deserialize(&mut Entropy {
        data: entropy,
        pos: 0,
        depth: 0,
    })
}

struct Entropy<'a> {
    data: &'a [u8],
    pos: usize,
    depth: usize,
}

impl Entropy<'_> {
    fn byte(&mut self) -> u8 {
        let b = self.data.get(self.pos).copied().unwrap_or(0);
        self.pos += 1;
        b
    }

    /// `n` bytes little-endian; half the time only the low byte is taken from the input, so
    /// small numbers (ids, seqs, limits) are common.
    fn uint(&mut self, n: usize) -> u128 {
        let small = self.byte() & 1 == 0;
        let n = if small { 1 } else { n };
        (0..n).fold(0u128, |acc, i| acc | u128::from(self.byte()) << (8 * i))
    }

    fn len(&mut self) -> usize {
        if self.depth >= DEPTH_MAX {
            return 0;
        }
        (self.byte() % 5) as usize
    }

    fn char(&mut self) -> char {
        match self.byte() % 4 {
            // Mostly ASCII letters and digits, sometimes any scalar value.
            0..=2 => (b'a' + self.byte() % 26) as char,
            _ => {
                let x = self.uint(3) as u32 % 0x11_0000;
                char::from_u32(x).unwrap_or('\u{fffd}')
            }
        }
    }

    fn string(&mut self) -> String {
        let len = match self.byte() % 8 {
            7 => self.byte() as usize,
            n => n as usize * 2,
        };
        (0..len).map(|_| self.char()).collect()
    }

    fn nested<T>(&mut self, f: impl FnOnce(&mut Self) -> T) -> T {
        self.depth += 1;
        let out = f(self);
        self.depth -= 1;
        out
    }
}

macro_rules! uint {
    ($method:ident, $visit:ident, $ty:ty) => {
        fn $method<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Self::Error> {
            v.$visit(self.uint(std::mem::size_of::<$ty>()) as $ty)
        }
    };
}

impl<'de> de::Deserializer<'de> for &mut Entropy<'_> {
    type Error = de::value::Error;

    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
        Err(de::Error::custom(
            "entropy is not self-describing: the type must say what it wants",
        ))
    }

    fn deserialize_bool<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Self::Error> {
        v.visit_bool(self.byte() & 1 == 1)
    }

    uint!(deserialize_u8, visit_u8, u8);
    uint!(deserialize_u16, visit_u16, u16);
    uint!(deserialize_u32, visit_u32, u32);
    uint!(deserialize_u64, visit_u64, u64);
    uint!(deserialize_u128, visit_u128, u128);
    uint!(deserialize_i8, visit_i8, i8);
    uint!(deserialize_i16, visit_i16, i16);
    uint!(deserialize_i32, visit_i32, i32);
    uint!(deserialize_i64, visit_i64, i64);
    uint!(deserialize_i128, visit_i128, i128);

    fn deserialize_f32<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Self::Error> {
        // Finite only: NaN is not equal to itself, which a round trip compares.
        v.visit_f32(self.uint(2) as f32 / 7.0)
    }

    fn deserialize_f64<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Self::Error> {
        v.visit_f64(self.uint(4) as f64 / 7.0)
    }

    fn deserialize_char<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Self::Error> {
        v.visit_char(self.char())
    }

    fn deserialize_str<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Self::Error> {
        v.visit_string(self.string())
    }

    fn deserialize_string<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Self::Error> {
        v.visit_string(self.string())
    }

    fn deserialize_bytes<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Self::Error> {
        self.deserialize_byte_buf(v)
    }

    fn deserialize_byte_buf<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Self::Error> {
        let len = self.byte() as usize % 64;
        let bytes: Vec<u8> = (0..len).map(|_| self.byte()).collect();
        v.visit_byte_buf(bytes)
    }

    fn deserialize_option<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Self::Error> {
        if self.depth >= DEPTH_MAX || self.byte() & 1 == 0 {
            v.visit_none()
        } else {
            self.nested(|e| v.visit_some(e))
        }
    }

    fn deserialize_unit<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Self::Error> {
        v.visit_unit()
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        v: V,
    ) -> Result<V::Value, Self::Error> {
        v.visit_unit()
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        v: V,
    ) -> Result<V::Value, Self::Error> {
        v.visit_newtype_struct(self)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Self::Error> {
        let len = self.len();
        self.nested(|e| v.visit_seq(Items { e, left: len }))
    }

    fn deserialize_tuple<V: Visitor<'de>>(self, len: usize, v: V) -> Result<V::Value, Self::Error> {
        self.nested(|e| v.visit_seq(Items { e, left: len }))
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        len: usize,
        v: V,
    ) -> Result<V::Value, Self::Error> {
        self.deserialize_tuple(len, v)
    }

    fn deserialize_map<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Self::Error> {
        let len = self.len();
        self.nested(|e| v.visit_map(Items { e, left: len }))
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        fields: &'static [&'static str],
        v: V,
    ) -> Result<V::Value, Self::Error> {
        self.deserialize_tuple(fields.len(), v)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _: &'static str,
        variants: &'static [&'static str],
        v: V,
    ) -> Result<V::Value, Self::Error> {
        let index = (self.uint(4) % variants.len().max(1) as u128) as u32;
        self.nested(|e| v.visit_enum(Variant { e, index }))
    }

    fn deserialize_identifier<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Self::Error> {
        self.deserialize_u32(v)
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Self::Error> {
        v.visit_unit()
    }

    fn is_human_readable(&self) -> bool {
        false
    }
}

/// `left` more elements of a sequence, tuple, struct or map.
struct Items<'e, 'a> {
    e: &'e mut Entropy<'a>,
    left: usize,
}

impl<'de> SeqAccess<'de> for Items<'_, '_> {
    type Error = de::value::Error;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, Self::Error> {
        if self.left == 0 {
            return Ok(None);
        }
        self.left -= 1;
        seed.deserialize(&mut *self.e).map(Some)
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.left)
    }
}

impl<'de> MapAccess<'de> for Items<'_, '_> {
    type Error = de::value::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Self::Error> {
        if self.left == 0 {
            return Ok(None);
        }
        self.left -= 1;
        seed.deserialize(&mut *self.e).map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(
        &mut self,
        seed: V,
    ) -> Result<V::Value, Self::Error> {
        seed.deserialize(&mut *self.e)
    }
}

/// The chosen variant of an enum, then its content.
struct Variant<'e, 'a> {
    e: &'e mut Entropy<'a>,
    index: u32,
}

impl<'de, 'e, 'a> EnumAccess<'de> for Variant<'e, 'a> {
    type Error = de::value::Error;
    type Variant = Self;

    fn variant_seed<V: DeserializeSeed<'de>>(
        self,
        seed: V,
    ) -> Result<(V::Value, Self::Variant), Self::Error> {
        let index: de::value::U32Deserializer<Self::Error> = self.index.into_deserializer();
        Ok((seed.deserialize(index)?, self))
    }
}

impl<'de> VariantAccess<'de> for Variant<'_, '_> {
    type Error = de::value::Error;

    fn unit_variant(self) -> Result<(), Self::Error> {
        Ok(())
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(
        self,
        seed: T,
    ) -> Result<T::Value, Self::Error> {
        seed.deserialize(&mut *self.e)
    }

    fn tuple_variant<V: Visitor<'de>>(self, len: usize, v: V) -> Result<V::Value, Self::Error> {
        v.visit_seq(Items {
            e: self.e,
            left: len,
        })
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        fields: &'static [&'static str],
        v: V,
    ) -> Result<V::Value, Self::Error> {
        v.visit_seq(Items {
            e: self.e,
            left: fields.len(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use stoa_proto::{ClientFrame, ServerFrame};

    #[test]
    fn every_byte_string_is_a_client_frame_and_every_variant_is_reached() {
        let mut requests = std::collections::BTreeSet::new();
        for seed in 0u32..4000 {
            let bytes: Vec<u8> = (0..64u32)
                .map(|i| (seed.wrapping_mul(2_654_435_761).wrapping_add(i * 40_503) >> 13) as u8)
                .collect();
            let frame: ClientFrame = value(&bytes).expect("any bytes make a frame");
            if let ClientFrame::Request { body, .. } = frame {
                // The variant's name, from its Debug form.
                let name = format!("{body:?}");
                let name = name.split(['(', ' ', '{']).next().unwrap_or("").to_string();
                requests.insert(name);
            }
        }
        // Every request variant of the protocol, listed by hand to notice a lost one: at least
        // the ones that existed when this was written are all reached.
        for name in [
            "Post",
            "Join",
            "History",
            "Subscribe",
            "Unsubscribe",
            "CreateUser",
            "CreateRoom",
            "ListRooms",
            "WhoAmI",
        ] {
            assert!(
                requests.contains(name),
                "{name} never made; made {requests:?}"
            );
        }
    }

    #[test]
    fn peer_requests_of_every_kind_are_made() {
        use stoa_node::net::peer::PeerRequest;
        let mut kinds = std::collections::BTreeSet::new();
        for seed in 0u32..2000 {
            let bytes: Vec<u8> = (0..256u32)
                .map(|i| (seed.wrapping_mul(2_654_435_761).wrapping_add(i * 40_503) >> 11) as u8)
                .collect();
            if let Ok(r) = value::<PeerRequest>(&bytes) {
                let name = format!("{r:?}");
                kinds.insert(name.split([' ', '{']).next().unwrap_or("").to_string());
            }
        }
        for kind in ["Append", "Vote", "Snapshot", "Propose"] {
            assert!(kinds.contains(kind), "{kind} never made; made {kinds:?}");
        }
    }

    #[test]
    fn the_same_bytes_make_the_same_value() {
        let bytes = [7u8, 1, 200, 3, 99, 42, 17, 0, 255, 4];
        let a: ServerFrame = value(&bytes).expect("value");
        let b: ServerFrame = value(&bytes).expect("value");
        assert_eq!(a, b);
    }
}
