//! The raw config deserialised from the reader's tree, with serde, by the
//! same `Deserialize` impls the `toml` crate drives, so that both give the
//! same raw structs. A `Spanned` value gets its span through the
//! protocol `serde_spanned` defines for deserialisers. Any error only says
//! that the `toml` crate must read the file.

use std::fmt;

use serde::de::value::{BorrowedStrDeserializer, StrDeserializer, UsizeDeserializer};
use serde::de::{self, DeserializeSeed, IntoDeserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_spanned::__unstable::{END_FIELD, NAME, START_FIELD, VALUE_FIELD};

use super::{Node, Table, Value};
use crate::rules::raw::RawConfig;

/// The raw config of `root`, or `None` if it does not fit the raw shape.
pub(super) fn raw_config(root: &Table<'_>) -> Option<RawConfig> {
    RawConfig::deserialize(Item::Table(root)).ok()
}

/// Something the tree cannot give as asked: the `toml` crate reads the
/// file instead, and says what is wrong, if anything.
#[derive(Debug)]
pub(super) struct Unreadable;

impl fmt::Display for Unreadable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("not read here")
    }
}

impl std::error::Error for Unreadable {}

impl de::Error for Unreadable {
    fn custom<T: fmt::Display>(_: T) -> Self {
        Unreadable
    }
}

/// A value of the tree, or a table of headers (which has no span).
#[derive(Clone, Copy)]
enum Item<'a, 't> {
    Node(&'a Node<'t>),
    Table(&'a Table<'t>),
}

impl<'de> de::Deserializer<'de> for Item<'_, '_> {
    type Error = Unreadable;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Unreadable> {
        let node = match self {
            Item::Table(table) => return visitor.visit_map(Entries::new(table)),
            Item::Node(node) => node,
        };
        match &node.value {
            Value::Str(text) => visitor.visit_str(text),
            Value::Int(n) => visitor.visit_i64(*n),
            Value::Bool(b) => visitor.visit_bool(*b),
            Value::Array(items) => visitor.visit_seq(Items {
                items: items.iter().map(Item::Node as fn(_) -> _),
            }),
            Value::Inline(table) | Value::Table(table) => visitor.visit_map(Entries::new(table)),
            Value::Tables(list) => visitor.visit_seq(Items {
                items: list.iter().map(Item::Table as fn(_) -> _),
            }),
        }
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Unreadable> {
        visitor.visit_some(self)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Unreadable> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Unreadable> {
        if name == NAME && fields == [START_FIELD, END_FIELD, VALUE_FIELD] {
            // Only scalars and arrays have spans checked against the
            // `toml` crate's.
            return match self {
                Item::Node(node)
                    if !matches!(
                        node.value,
                        Value::Inline(_) | Value::Table(_) | Value::Tables(_)
                    ) =>
                {
                    visitor.visit_map(SpannedParts { node, next: 0 })
                }
                _ => Err(Unreadable),
            };
        }
        self.deserialize_any(visitor)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf unit unit_struct seq tuple tuple_struct map enum
        identifier ignored_any
    }
}

/// The elements of an array.
struct Items<I> {
    items: I,
}

impl<'de, 'a, 't: 'a, I: Iterator<Item = Item<'a, 't>>> SeqAccess<'de> for Items<I> {
    type Error = Unreadable;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, Unreadable> {
        self.items
            .next()
            .map(|item| seed.deserialize(item))
            .transpose()
    }

    fn size_hint(&self) -> Option<usize> {
        self.items.size_hint().1
    }
}

/// The keys and values of a table.
struct Entries<'a, 't> {
    entries: std::slice::Iter<'a, (&'t str, Node<'t>)>,
    value: Option<&'a Node<'t>>,
}

impl<'a, 't> Entries<'a, 't> {
    fn new(table: &'a Table<'t>) -> Self {
        Entries {
            entries: table.entries.iter(),
            value: None,
        }
    }
}

impl<'de> MapAccess<'de> for Entries<'_, '_> {
    type Error = Unreadable;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Unreadable> {
        let Some((key, node)) = self.entries.next() else {
            return Ok(None);
        };
        self.value = Some(node);
        let key: StrDeserializer<'_, Unreadable> = key.into_deserializer();
        seed.deserialize(key).map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(
        &mut self,
        seed: V,
    ) -> Result<V::Value, Unreadable> {
        let node = self.value.take().ok_or(Unreadable)?;
        match &node.value {
            Value::Table(table) => seed.deserialize(Item::Table(table)),
            _ => seed.deserialize(Item::Node(node)),
        }
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.entries.len())
    }
}

/// A value's start, end and the value itself, as `Spanned` reads them.
struct SpannedParts<'a, 't> {
    node: &'a Node<'t>,
    next: u8,
}

impl<'de> MapAccess<'de> for SpannedParts<'_, '_> {
    type Error = Unreadable;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Unreadable> {
        let key = match self.next {
            0 => START_FIELD,
            1 => END_FIELD,
            2 => VALUE_FIELD,
            _ => return Ok(None),
        };
        // `Spanned` reads its keys as `&'de str`: borrowed for any `'de`.
        seed.deserialize(BorrowedStrDeserializer::new(key))
            .map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(
        &mut self,
        seed: V,
    ) -> Result<V::Value, Unreadable> {
        self.next += 1;
        let at = |n: usize| -> UsizeDeserializer<Unreadable> { n.into_deserializer() };
        match self.next {
            1 => seed.deserialize(at(self.node.start)),
            2 => seed.deserialize(at(self.node.end)),
            3 => seed.deserialize(Item::Node(self.node)),
            _ => Err(Unreadable),
        }
    }
}
