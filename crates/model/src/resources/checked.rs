//! Serde plumbing that keeps every check inside the YAML deserializer.
//!
//! serde_yaml_ng gives an error its line, column and field path only while the
//! deserializer for that YAML node is still running: an error returned after
//! `T::deserialize` has finished is blamed on the enclosing mapping instead. So every
//! check here runs inside a visitor callback: scalars are checked in `visit_str`,
//! `visit_u64` or `visit_f64`, sequences in `visit_seq`, whole mappings in `visit_map`.

use serde::de::value::MapAccessDeserializer;
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use std::fmt;
use std::marker::PhantomData;

/// A value parsed from one YAML scalar, read as text.
pub(crate) trait FromText: Sized {
    const EXPECTING: &'static str;
    fn from_text(text: &str) -> Result<Self, String>;
}

/// A value parsed from one YAML unsigned integer.
pub(crate) trait FromInt: Sized {
    const EXPECTING: &'static str;
    fn from_int(value: u64) -> Result<Self, String>;
}

/// A value parsed from one YAML number, integer or not.
pub(crate) trait FromFloat: Sized {
    const EXPECTING: &'static str;
    fn from_float(value: f64) -> Result<Self, String>;
}

/// A value read from one YAML mapping and checked as a whole.
pub(crate) trait FromMap: Sized {
    const EXPECTING: &'static str;
    fn from_map<'de, A: MapAccess<'de>>(map: A) -> Result<Self, A::Error>;
}

/// Implements `Deserialize` for types through one of the helpers below:
/// `deserialize_with!(text: Name, Hostname)`.
macro_rules! deserialize_with {
    ($helper:ident: $($ty:ty),+ $(,)?) => {$(
        impl<'de> serde::Deserialize<'de> for $ty {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                $crate::resources::checked::$helper(d)
            }
        }
    )+};
}
pub(crate) use deserialize_with;

pub(crate) fn text<'de, D: Deserializer<'de>, T: FromText>(d: D) -> Result<T, D::Error> {
    d.deserialize_str(TextVisitor(PhantomData))
}

pub(crate) fn int<'de, D: Deserializer<'de>, T: FromInt>(d: D) -> Result<T, D::Error> {
    d.deserialize_u64(IntVisitor(PhantomData))
}

pub(crate) fn float<'de, D: Deserializer<'de>, T: FromFloat>(d: D) -> Result<T, D::Error> {
    d.deserialize_f64(FloatVisitor(PhantomData))
}

pub(crate) fn map<'de, D: Deserializer<'de>, T: FromMap>(d: D) -> Result<T, D::Error> {
    d.deserialize_map(MapVisitor(PhantomData))
}

/// Reads a mapping's fields with `T`'s own (derived) `Deserialize`, for use in
/// [`FromMap::from_map`] before the whole-mapping check.
pub(crate) fn fields<'de, A: MapAccess<'de>, T: Deserialize<'de>>(map: A) -> Result<T, A::Error> {
    T::deserialize(MapAccessDeserializer::new(map))
}

/// Turns a check's message into a deserializer error (which then gets its location).
pub(crate) fn checked<T, E: de::Error>(result: Result<T, String>) -> Result<T, E> {
    result.map_err(E::custom)
}

/// Reads a sequence and runs `check` on all of it before the sequence ends, so a
/// failure names the sequence's line and field (`deserialize_with` helper).
pub(crate) fn seq<'de, D, T>(
    d: D,
    check: fn(&[T]) -> Result<(), String>,
) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    d.deserialize_seq(SeqVisitor { check })
}

/// `deserialize_with` helper for lists that must not be empty.
pub(crate) fn non_empty<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    seq(d, |items| {
        if items.is_empty() {
            Err("at least one entry is required".to_owned())
        } else {
            Ok(())
        }
    })
}

/// The string fields of a mapping whose `type` field decides how they are checked
/// (Gateway API matches: `{type: RegularExpression, value: "..."}`).
pub(crate) struct TypedFields<T> {
    pub kind: T,
    /// One entry per name in `fields[1..]`, in that order.
    pub values: Vec<Option<String>>,
}

/// Reads a [`TypedFields`] mapping. `fields[0]` must be `"type"`. `check` gets the type
/// (`None` while it has not been read yet), the field name and the value. When `type`
/// comes first (the usual order) each value is checked as it is read, so an error points
/// at the value itself. A value read before `type`, or in a mapping that leaves `type` to
/// its default, is checked again at the end with the final type, and then the error
/// points at the mapping.
pub(crate) fn typed_fields<'de, A, T, F>(
    mut map: A,
    fields: &'static [&'static str],
    check: F,
) -> Result<TypedFields<T>, A::Error>
where
    A: MapAccess<'de>,
    T: Deserialize<'de> + Copy + Default,
    F: Fn(Option<T>, &str, &str) -> Result<(), String>,
{
    let mut kind: Option<T> = None;
    // Each value, and whether it was read before the type.
    let mut values: Vec<Option<(String, bool)>> = vec![None; fields.len() - 1];
    while let Some(index) = map.next_key_seed(FieldIndex(fields))? {
        if index == 0 {
            if kind.is_some() {
                return Err(de::Error::duplicate_field(fields[0]));
            }
            kind = Some(map.next_value()?);
            continue;
        }
        let field = fields[index];
        if values[index - 1].is_some() {
            return Err(de::Error::duplicate_field(field));
        }
        let known = kind;
        let value = map.next_value_seed(CheckedText(|text: &str| check(known, field, text)))?;
        values[index - 1] = Some((value, known.is_none()));
    }
    let kind = kind.unwrap_or_default();
    for (field, slot) in fields[1..].iter().zip(&values) {
        if let Some((value, true)) = slot {
            checked(check(Some(kind), field, value).map_err(|e| format!("{field}: {e}")))?;
        }
    }
    let values = values
        .into_iter()
        .map(|slot| slot.map(|(value, _)| value))
        .collect();
    Ok(TypedFields { kind, values })
}

struct TextVisitor<T>(PhantomData<T>);

impl<T: FromText> Visitor<'_> for TextVisitor<T> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(T::EXPECTING)
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<T, E> {
        checked(T::from_text(text))
    }
}

struct IntVisitor<T>(PhantomData<T>);

impl<T: FromInt> Visitor<'_> for IntVisitor<T> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(T::EXPECTING)
    }

    fn visit_u64<E: de::Error>(self, value: u64) -> Result<T, E> {
        checked(T::from_int(value))
    }
}

struct FloatVisitor<T>(PhantomData<T>);

impl<T: FromFloat> Visitor<'_> for FloatVisitor<T> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(T::EXPECTING)
    }

    fn visit_f64<E: de::Error>(self, value: f64) -> Result<T, E> {
        checked(T::from_float(value))
    }

    // Integers reach here from other deserializers (JSON); converting is exact for the
    // ranges we accept.
    fn visit_u64<E: de::Error>(self, value: u64) -> Result<T, E> {
        self.visit_f64(value as f64)
    }

    fn visit_i64<E: de::Error>(self, value: i64) -> Result<T, E> {
        self.visit_f64(value as f64)
    }
}

struct MapVisitor<T>(PhantomData<T>);

impl<'de, T: FromMap> Visitor<'de> for MapVisitor<T> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(T::EXPECTING)
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
        T::from_map(map)
    }
}

struct SeqVisitor<T> {
    check: fn(&[T]) -> Result<(), String>,
}

impl<'de, T: Deserialize<'de>> Visitor<'de> for SeqVisitor<T> {
    type Value = Vec<T>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a list")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        checked((self.check)(&items))?;
        Ok(items)
    }
}

/// A mapping key, as its index in a list of known field names.
struct FieldIndex(&'static [&'static str]);

impl<'de> DeserializeSeed<'de> for FieldIndex {
    type Value = usize;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<usize, D::Error> {
        d.deserialize_str(self)
    }
}

impl Visitor<'_> for FieldIndex {
    type Value = usize;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a field name")
    }

    fn visit_str<E: de::Error>(self, key: &str) -> Result<usize, E> {
        self.0
            .iter()
            .position(|field| *field == key)
            .ok_or_else(|| E::unknown_field(key, self.0))
    }
}

/// A string checked by a closure while its node is being read.
struct CheckedText<F>(F);

impl<'de, F: FnOnce(&str) -> Result<(), String>> DeserializeSeed<'de> for CheckedText<F> {
    type Value = String;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<String, D::Error> {
        d.deserialize_str(self)
    }
}

impl<F: FnOnce(&str) -> Result<(), String>> Visitor<'_> for CheckedText<F> {
    type Value = String;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a string")
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<String, E> {
        checked((self.0)(text))?;
        Ok(text.to_owned())
    }
}
