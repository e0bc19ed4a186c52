//! A serde deserializer that offers every field of every struct it is
//! asked for and records their key paths: how the tests enumerate the keys
//! the config types accept (tests only).

use serde::de::{self, DeserializeSeed, IntoDeserializer, MapAccess, SeqAccess, Visitor};

pub struct Tracer<'a> {
    pub path: String,
    pub seen: &'a mut Vec<String>,
    /// Structs being traced, so a recursive type stops.
    pub stack: &'a mut Vec<&'static str>,
}

#[derive(Debug)]
pub struct Error(String);
impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for Error {}
impl de::Error for Error {
    fn custom<T: std::fmt::Display>(msg: T) -> Self {
        Error(msg.to_string())
    }
}

struct Fields<'a, 'b> {
    t: &'b mut Tracer<'a>,
    fields: std::slice::Iter<'static, &'static str>,
    /// A map offers one entry under the key `*`.
    map_entry: bool,
    current: String,
}

impl<'de> MapAccess<'de> for Fields<'_, '_> {
    type Error = Error;
    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Error> {
        let key = if self.map_entry {
            self.map_entry = false;
            "*"
        } else {
            match self.fields.next() {
                Some(f) => f,
                None => return Ok(None),
            }
        };
        self.current = key.to_owned();
        seed.deserialize(key.into_deserializer()).map(Some)
    }
    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, Error> {
        let path = if self.t.path.is_empty() {
            self.current.clone()
        } else {
            format!("{}.{}", self.t.path, self.current)
        };
        seed.deserialize(Tracer {
            path,
            seen: self.t.seen,
            stack: self.t.stack,
        })
    }
}

struct One<'a, 'b> {
    t: &'b mut Tracer<'a>,
    done: bool,
}

impl<'de> SeqAccess<'de> for One<'_, '_> {
    type Error = Error;
    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, Error> {
        if self.done {
            return Ok(None);
        }
        self.done = true;
        seed.deserialize(Tracer {
            path: format!("{}[]", self.t.path),
            seen: self.t.seen,
            stack: self.t.stack,
        })
        .map(Some)
    }
}

impl<'de> de::Deserializer<'de> for Tracer<'_> {
    type Error = Error;

    fn deserialize_any<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
        // Free-form values (JSON maps, ports, one-or-many lists):
        // a string satisfies them all.
        v.visit_str("1s")
    }
    fn deserialize_bool<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
        v.visit_bool(true)
    }
    fn deserialize_u64<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
        v.visit_u64(1)
    }
    fn deserialize_u16<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
        v.visit_u64(1)
    }
    fn deserialize_u32<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
        v.visit_u64(1)
    }
    fn deserialize_i64<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
        v.visit_i64(1)
    }
    fn deserialize_f64<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
        v.visit_f64(1.0)
    }
    fn deserialize_str<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
        v.visit_str("1s")
    }
    fn deserialize_string<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
        v.visit_str("1s")
    }
    fn deserialize_option<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
        v.visit_some(self)
    }
    fn deserialize_seq<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
        let mut t = self;
        v.visit_seq(One {
            t: &mut t,
            done: false,
        })
    }
    fn deserialize_map<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
        let mut t = self;
        v.visit_map(Fields {
            t: &mut t,
            fields: [].iter(),
            map_entry: true,
            current: String::new(),
        })
    }
    fn deserialize_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        fields: &'static [&'static str],
        v: V,
    ) -> Result<V::Value, Error> {
        let mut t = self;
        if t.stack.contains(&name) {
            // A recursive type (storage.subPaths): its keys are
            // the ones already traced.
            return v.visit_map(Fields {
                t: &mut t,
                fields: [].iter(),
                map_entry: false,
                current: String::new(),
            });
        }
        for f in fields {
            let p = if t.path.is_empty() {
                (*f).to_owned()
            } else {
                format!("{}.{f}", t.path)
            };
            t.seen.push(p);
        }
        t.stack.push(name);
        let r = v.visit_map(Fields {
            t: &mut t,
            fields: fields.iter(),
            map_entry: false,
            current: String::new(),
        });
        t.stack.pop();
        r
    }

    serde::forward_to_deserialize_any! {
        i8 i16 i32 i128 u8 u128 f32 char bytes byte_buf unit unit_struct
        newtype_struct tuple tuple_struct enum identifier ignored_any
    }
}
