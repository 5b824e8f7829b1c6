//! Reading enums tagged by a field of their object (`{"op":"batch",...}`)
//! without buffering the whole object first.
//!
//! serde's derived internally tagged enums copy the object into a generic
//! tree before reading the variant, because the tag may come last. For a
//! batch of 100 000 edits that copy costs more than everything else the
//! daemon does with the request. Here, when the tag is the object's first
//! field — as our serialisers write it — the rest of the object is read
//! straight into the variant's type; only an object with its tag elsewhere
//! is buffered. Unknown fields are still refused by the variants' own
//! `deny_unknown_fields`.

use std::fmt;
use std::marker::PhantomData;

use serde::de::value::MapAccessDeserializer;
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::{Map, Value};

/// An enum read from an object whose `TAG` field names the variant.
pub(crate) trait Tagged: Sized {
    /// The tag field, e.g. `op`.
    const TAG: &'static str;
    /// The variant names, for error messages.
    const VARIANTS: &'static [&'static str];
    /// What the enum is, for error messages.
    const EXPECTING: &'static str;

    /// The variant called `name`, read from the rest of the object.
    fn read<'de, B: Body<'de>>(name: &str, body: B) -> Result<Self, B::Error>;
}

/// The rest of a tagged object, to be read as one variant's fields.
pub(crate) trait Body<'de> {
    /// The deserializer's error.
    type Error: de::Error;
    /// Reads the fields as a `T`.
    fn value<T: Deserialize<'de>>(self) -> Result<T, Self::Error>;
}

/// The fields still to come from the deserializer.
struct Streamed<A>(A);

impl<'de, A: MapAccess<'de>> Body<'de> for Streamed<A> {
    type Error = A::Error;
    fn value<T: Deserialize<'de>>(self) -> Result<T, A::Error> {
        T::deserialize(MapAccessDeserializer::new(self.0))
    }
}

/// The fields, buffered because the tag came after some of them.
struct Buffered<E>(Map<String, Value>, PhantomData<E>);

impl<'de, E: de::Error> Body<'de> for Buffered<E> {
    type Error = E;
    fn value<T: Deserialize<'de>>(self) -> Result<T, E> {
        T::deserialize(Value::Object(self.0)).map_err(E::custom)
    }
}

/// A variant with no fields (`{"op":"status"}`): refuses any field.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct NoFields {}

/// Reads a [`Tagged`] enum.
pub(crate) fn deserialize<'de, T: Tagged, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<T, D::Error> {
    deserializer.deserialize_map(TaggedVisitor(PhantomData))
}

struct TaggedVisitor<T>(PhantomData<T>);

impl<'de, T: Tagged> Visitor<'de> for TaggedVisitor<T> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (an object with a {:?} field)", T::EXPECTING, T::TAG)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<T, A::Error> {
        let mut buffered = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if key == T::TAG {
                let name: String = map.next_value()?;
                if buffered.is_empty() {
                    return T::read(&name, Streamed(map));
                }
                // The tag came late: buffer what is left too.
                while let Some((k, v)) = map.next_entry::<String, Value>()? {
                    if k == T::TAG {
                        return Err(de::Error::duplicate_field(T::TAG));
                    }
                    buffered.insert(k, v);
                }
                return T::read(&name, Buffered::<A::Error>(buffered, PhantomData));
            }
            let value: Value = map.next_value()?;
            buffered.insert(key, value);
        }
        Err(de::Error::missing_field(T::TAG))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Point {
        x: i32,
        y: i32,
    }

    #[derive(Debug, PartialEq)]
    enum Shape {
        Dot(Point),
        Empty,
    }

    impl Tagged for Shape {
        const TAG: &'static str = "kind";
        const VARIANTS: &'static [&'static str] = &["dot", "empty"];
        const EXPECTING: &'static str = "a shape";
        fn read<'de, B: Body<'de>>(name: &str, body: B) -> Result<Self, B::Error> {
            match name {
                "dot" => Ok(Shape::Dot(body.value()?)),
                "empty" => body.value::<NoFields>().map(|_| Shape::Empty),
                other => Err(de::Error::unknown_variant(other, Self::VARIANTS)),
            }
        }
    }

    impl<'de> Deserialize<'de> for Shape {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            deserialize(d)
        }
    }

    fn shape(text: &str) -> Result<Shape, String> {
        serde_json::from_str(text).map_err(|e| e.to_string())
    }

    #[test]
    fn reads_the_tag_wherever_it_is() {
        let dot = Shape::Dot(Point { x: 1, y: 2 });
        assert_eq!(
            shape(r#"{"kind":"dot","x":1,"y":2}"#),
            Ok(Shape::Dot(Point { x: 1, y: 2 }))
        );
        assert_eq!(shape(r#"{"x":1,"kind":"dot","y":2}"#), Ok(dot));
        assert_eq!(
            shape(r#"{"y":2,"x":1,"kind":"dot"}"#),
            Ok(Shape::Dot(Point { x: 1, y: 2 }))
        );
        assert_eq!(shape(r#"{"kind":"empty"}"#), Ok(Shape::Empty));
    }

    #[test]
    fn refuses_what_the_derived_form_refuses() {
        for (text, words) in [
            (r#"{"kind":"dot","x":1,"y":2,"z":3}"#, "unknown field `z`"),
            (r#"{"z":3,"kind":"dot","x":1,"y":2}"#, "unknown field `z`"),
            (r#"{"kind":"empty","x":1}"#, "unknown field `x`"),
            (r#"{"kind":"dot","x":1}"#, "missing field `y`"),
            (
                r#"{"kind":"square"}"#,
                "unknown variant `square`, expected `dot` or `empty`",
            ),
            (r#"{"x":1}"#, "missing field `kind`"),
            (
                r#"{"x":1,"kind":"dot","kind":"dot"}"#,
                "duplicate field `kind`",
            ),
            (r#"{"kind":7}"#, "invalid type"),
            ("[1]", "a shape"),
        ] {
            let e = shape(text).unwrap_err();
            assert!(e.contains(words), "{text}: {e}");
        }
    }
}
