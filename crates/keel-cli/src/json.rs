//! JSON ↔ protobuf by the proto3 JSON mapping (prost-reflect, as Keel's
//! HTTP calls do), with errors that name the field at fault
//! (`.items[2].price: invalid type ...`).

use std::io::Read as _;

use bytes::Bytes;
use prost::Message as _;
use prost_reflect::{DynamicMessage, Kind, MessageDescriptor};
use serde_json::Value;

use crate::failure::Failure;

/// The request text `-d` gives: inline JSON, `@FILE` or `@-` (standard
/// input); none is `{}`.
pub fn request_text(data: Option<&str>) -> Result<String, Failure> {
    match data {
        None => Ok("{}".to_owned()),
        Some("@-") => {
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .map_err(|e| Failure::usage(format!("-d @-: cannot read standard input: {e}")))?;
            Ok(text)
        }
        Some(d) => match d.strip_prefix('@') {
            Some(path) => std::fs::read_to_string(path)
                .map_err(|e| Failure::usage(format!("-d @{path}: {e}"))),
            None => Ok(d.to_owned()),
        },
    }
}

/// The JSON values in `text`: one, or a stream of them (one a line, or
/// just one after another).
pub fn values(text: &str) -> Result<Vec<Value>, Failure> {
    let mut out = Vec::new();
    for v in serde_json::Deserializer::from_str(text).into_iter::<Value>() {
        out.push(v.map_err(|e| Failure::usage(format!("the request is not valid JSON: {e}")))?);
    }
    Ok(out)
}

/// The protobuf encoding of `value` as a `descriptor` message; a value
/// that does not fit is a usage error naming the field's path.
pub fn encode(descriptor: &MessageDescriptor, value: &Value) -> Result<Bytes, Failure> {
    match DynamicMessage::deserialize(descriptor.clone(), value) {
        Ok(message) => Ok(message.encode_to_vec().into()),
        Err(e) => {
            let (path, why) =
                locate(descriptor, value, String::new()).unwrap_or((String::new(), e.to_string()));
            let at = if path.is_empty() {
                String::new()
            } else {
                format!(" at {path}")
            };
            Err(Failure::usage(format!(
                "the request does not fit {}{at}: {why}",
                descriptor.full_name()
            )))
        }
    }
}

/// Where in `value` the first field that does not fit `descriptor` is,
/// and why: each field is tried alone, and a message field that fails is
/// searched inside.
fn locate(descriptor: &MessageDescriptor, value: &Value, path: String) -> Option<(String, String)> {
    let Value::Object(fields) = value else {
        return DynamicMessage::deserialize(descriptor.clone(), value)
            .err()
            .map(|e| (path, e.to_string()));
    };
    for (name, v) in fields {
        let here = format!("{path}.{name}");
        let Some(field) = descriptor
            .get_field_by_json_name(name)
            .or_else(|| descriptor.get_field_by_name(name))
        else {
            let known: Vec<String> = descriptor
                .fields()
                .map(|f| f.json_name().to_owned())
                .collect();
            return Some((
                here,
                format!("no such field (fields: {})", known.join(", ")),
            ));
        };
        let alone = Value::Object([(name.clone(), v.clone())].into_iter().collect());
        let Err(e) = DynamicMessage::deserialize(descriptor.clone(), &alone) else {
            continue;
        };
        let nested = match field.kind() {
            Kind::Message(m)
                if !m.full_name().starts_with("google.protobuf.") && !field.is_map() =>
            {
                Some(m)
            }
            _ => None,
        };
        if let Some(m) = nested {
            match v {
                Value::Array(items) if field.is_list() => {
                    for (i, item) in items.iter().enumerate() {
                        if let Some(found) = locate(&m, item, format!("{here}[{i}]")) {
                            return Some(found);
                        }
                    }
                }
                Value::Object(_) => {
                    if let Some(found) = locate(&m, v, here.clone()) {
                        return Some(found);
                    }
                }
                _ => {}
            }
        }
        return Some((here, e.to_string()));
    }
    None
}

/// The JSON of `encoded`, a `descriptor` message, pretty or on one line.
pub fn decode(
    descriptor: &MessageDescriptor,
    encoded: Bytes,
    pretty: bool,
) -> Result<String, Failure> {
    let message = DynamicMessage::decode(descriptor.clone(), encoded).map_err(|e| Failure {
        code: crate::failure::exit::RPC,
        message: format!(
            "the response is not a valid {}: {e}",
            descriptor.full_name()
        ),
    })?;
    let text = if pretty {
        serde_json::to_string_pretty(&message)
    } else {
        serde_json::to_string(&message)
    };
    text.map_err(|e| Failure::other(format!("cannot print the response as JSON: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool() -> prost_reflect::DescriptorPool {
        let dir = std::env::temp_dir().join(format!("keel-cli-json-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        std::fs::write(
            dir.join("t.proto"),
            "syntax = \"proto3\"; package t;\n\
             message Item { string name = 1; int32 count = 2; }\n\
             message Order { string id = 1; repeated Item items = 2; Item main = 3; }\n",
        )
        .expect("write");
        let mut c = protox::Compiler::new([&dir]).expect("compiler");
        c.open_file("t.proto").expect("compiles");
        let pool = c.descriptor_pool();
        let _ = std::fs::remove_dir_all(&dir);
        pool
    }

    #[test]
    fn errors_name_the_field_path() {
        let pool = pool();
        let order = pool.get_message_by_name("t.Order").expect("Order");
        let ok = serde_json::json!({"id": "a", "items": [{"name": "x", "count": 2}]});
        assert!(encode(&order, &ok).is_ok());
        let bad = serde_json::json!({"id": "a", "items": [{"name": "x"}, {"count": "many"}]});
        let err = encode(&order, &bad).expect_err("bad count");
        assert!(err.message.contains("at .items[1].count"), "{err}");
        let bad = serde_json::json!({"main": {"nmae": "x"}});
        let err = encode(&order, &bad).expect_err("unknown field");
        assert!(
            err.message.contains("at .main.nmae: no such field"),
            "{err}"
        );
        assert_eq!(values("{}\n{\"id\":\"b\"}\n").expect("two").len(), 2);
        assert!(values("{\"id\": ").is_err());
    }
}
