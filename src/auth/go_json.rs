//! JSON with repeated keys read as Go's `encoding/json` reads it into the
//! jwt library's structs: a repeated object is decoded into the fields the
//! first one filled, so the two merge (fields of the later win, fields only
//! the earlier has stay); any other repeated value is replaced by the later.
//! serde's derived structs refuse repeated fields, so JWT claims that carry
//! them (valid to nats-server) are read through this.

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

/// Parses `bytes` into a value with repeated keys merged as Go merges them.
pub fn from_slice(bytes: &[u8]) -> Result<Value, serde_json::Error> {
    serde_json::from_slice::<GoValue>(bytes).map(|v| v.0)
}

/// A JSON value built with Go's handling of repeated keys.
struct GoValue(Value);

impl<'de> Deserialize<'de> for GoValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(GoVisitor).map(GoValue)
    }
}

/// Puts `value` under `key`: objects merge into an object already there.
fn put(into: &mut Map<String, Value>, key: String, value: Value) {
    match (into.get_mut(&key), value) {
        (Some(Value::Object(old)), Value::Object(new)) => {
            for (k, v) in new {
                put(old, k, v);
            }
        }
        (_, value) => {
            into.insert(key, value);
        }
    }
}

struct GoVisitor;

impl<'de> Visitor<'de> for GoVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        GoValue::deserialize(d).map(|v| v.0)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(GoValue(v)) = seq.next_element()? {
            items.push(v);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut m = Map::new();
        while let Some(k) = map.next_key::<String>()? {
            let GoValue(v) = map.next_value()?;
            put(&mut m, k, v);
        }
        Ok(Value::Object(m))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn repeated_objects_merge_and_the_rest_is_replaced() {
        let v = from_slice(
            br#"{"nats":{"pub":{"deny":["foo"]},"subs":1,"tags":["a"]},"name":"x",
                "nats":{"pub":{},"subs":-1,"tags":["b"],"data":2},"name":"y"}"#,
        )
        .unwrap();
        assert_eq!(
            v,
            json!({"nats":{"pub":{"deny":["foo"]},"subs":-1,"tags":["b"],"data":2},"name":"y"})
        );
    }

    #[test]
    fn plain_json_reads_as_serde_reads_it() {
        let text = br#"{"a":[1,2.5,-3,null,true,"s"],"b":{"c":{}}}"#;
        assert_eq!(
            from_slice(text).unwrap(),
            serde_json::from_slice::<Value>(text).unwrap()
        );
        assert!(from_slice(b"{\"a\":").is_err());
    }
}
