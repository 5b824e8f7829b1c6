//! A validator for the subset of JSON Schema (draft 2020-12) that the
//! schemas in docs/schemas/ use, and nothing more: `type`, `properties`,
//! `required`, `additionalProperties`, `items`, `enum`, `const`,
//! `minimum`, `maximum` and `$ref` (to `#/$defs/NAME` in the same file or
//! `FILE#/$defs/NAME` beside it), with the annotations `$schema`, `$id`,
//! `$defs`, `title` and `description`.
//!
//! Loading refuses a schema that uses any other keyword (it would be
//! silently ignored here, so the schema would promise what nothing checks)
//! and an object schema without `additionalProperties: false` (docs/api.md
//! promises that every field is documented). Its own tests are below.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::Value;

/// Keywords a schema may use.
const KEYWORDS: [&str; 15] = [
    "$schema",
    "$id",
    "$defs",
    "title",
    "description",
    "type",
    "properties",
    "required",
    "additionalProperties",
    "items",
    "enum",
    "const",
    "minimum",
    "maximum",
    "$ref",
];

/// The schemas of a directory, by file name.
pub struct Schemas {
    files: BTreeMap<String, Value>,
}

impl Schemas {
    /// Loads every `*.json` of `dir` and checks each as the module says.
    pub fn load(dir: &Path) -> Result<Schemas, String> {
        let mut files = BTreeMap::new();
        let entries = std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        for entry in entries {
            let path = entry.map_err(|e| e.to_string())?.path();
            if path.extension().is_none_or(|e| e != "json") {
                continue;
            }
            let text = std::fs::read_to_string(&path).map_err(|e| e.to_string())?;
            let schema: Value =
                serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            files.insert(name, schema);
        }
        Schemas::from_files(files)
    }

    /// Schemas given as (file name, schema) pairs.
    pub fn from_files(files: BTreeMap<String, Value>) -> Result<Schemas, String> {
        let schemas = Schemas { files };
        let mut problems = Vec::new();
        for (name, schema) in &schemas.files {
            schemas.check_schema(name, schema, "#", &mut problems);
        }
        if problems.is_empty() {
            Ok(schemas)
        } else {
            Err(problems.join("\n"))
        }
    }

    /// The file names.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.files.keys().map(String::as_str)
    }

    /// The schema a `$ref` (or a file name) points to.
    pub fn resolve(&self, file: &str, reference: &str) -> Option<(&str, &Value)> {
        let (target, pointer) = reference.split_once('#').unwrap_or((reference, ""));
        let target = if target.is_empty() { file } else { target };
        let (name, root) = self.files.get_key_value(target)?;
        Some((name.as_str(), root.pointer(pointer)?))
    }

    /// Why `instance` does not match schema file `file`, one line per
    /// mismatch with its place (`/dataplane/workers/0/core: ...`); empty
    /// when it matches.
    pub fn validate(&self, file: &str, instance: &Value) -> Vec<String> {
        let mut errors = Vec::new();
        match self.resolve(file, "") {
            Some((file, schema)) => self.check(file, schema, instance, "", &mut errors),
            None => errors.push(format!("no schema {file}")),
        }
        errors
    }

    fn check_schema(&self, file: &str, schema: &Value, at: &str, problems: &mut Vec<String>) {
        let Some(map) = schema.as_object() else {
            problems.push(format!("{file}{at}: a schema must be an object"));
            return;
        };
        for key in map.keys() {
            if !KEYWORDS.contains(&key.as_str()) {
                problems.push(format!("{file}{at}: unsupported keyword {key:?}"));
            }
        }
        if let Some(reference) = map.get("$ref").and_then(Value::as_str) {
            if self.resolve(file, reference).is_none() {
                problems.push(format!("{file}{at}: $ref {reference:?} points nowhere"));
            }
        }
        if map.get("type").and_then(Value::as_str) == Some("object")
            && map.get("additionalProperties") != Some(&Value::Bool(false))
        {
            problems.push(format!(
                "{file}{at}: an object schema needs additionalProperties: false"
            ));
        }
        for (key, children) in [("properties", true), ("$defs", true), ("items", false)] {
            match (map.get(key), children) {
                (Some(Value::Object(named)), true) => {
                    for (name, child) in named {
                        self.check_schema(file, child, &format!("{at}/{key}/{name}"), problems);
                    }
                }
                (Some(child), false) => {
                    self.check_schema(file, child, &format!("{at}/{key}"), problems)
                }
                (Some(_), true) => problems.push(format!("{file}{at}/{key}: must be an object")),
                (None, _) => {}
            }
        }
    }

    fn check(&self, file: &str, schema: &Value, value: &Value, at: &str, errors: &mut Vec<String>) {
        let place = if at.is_empty() { "/" } else { at };
        if let Some(reference) = schema.get("$ref").and_then(Value::as_str) {
            match self.resolve(file, reference) {
                Some((target, referred)) => self.check(target, referred, value, at, errors),
                None => errors.push(format!("{place}: $ref {reference:?} points nowhere")),
            }
        }
        if let Some(kind) = schema.get("type").and_then(Value::as_str) {
            if !has_type(value, kind) {
                errors.push(format!("{place}: expected {kind}, got {value}"));
                return;
            }
        }
        if let Some(expected) = schema.get("const") {
            if value != expected {
                errors.push(format!("{place}: expected {expected}, got {value}"));
            }
        }
        if let Some(Value::Array(allowed)) = schema.get("enum") {
            if !allowed.contains(value) {
                errors.push(format!("{place}: {value} is not one of {allowed:?}"));
            }
        }
        if let (Some(n), Some(min)) = (
            value.as_f64(),
            schema.get("minimum").and_then(Value::as_f64),
        ) {
            if n < min {
                errors.push(format!("{place}: {n} is below the minimum {min}"));
            }
        }
        if let (Some(n), Some(max)) = (
            value.as_f64(),
            schema.get("maximum").and_then(Value::as_f64),
        ) {
            if n > max {
                errors.push(format!("{place}: {n} is above the maximum {max}"));
            }
        }
        if let (Value::Array(items), Some(item_schema)) = (value, schema.get("items")) {
            for (i, item) in items.iter().enumerate() {
                self.check(file, item_schema, item, &format!("{at}/{i}"), errors);
            }
        }
        if let Value::Object(fields) = value {
            let properties = schema.get("properties").and_then(Value::as_object);
            for required in schema
                .get("required")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
            {
                if !fields.contains_key(required) {
                    errors.push(format!("{place}: missing {required:?}"));
                }
            }
            for (name, field) in fields {
                let field_at = format!("{at}/{name}");
                match properties.and_then(|p| p.get(name)) {
                    Some(field_schema) => self.check(file, field_schema, field, &field_at, errors),
                    None if schema.get("additionalProperties") == Some(&Value::Bool(false)) => {
                        errors.push(format!("{field_at}: not in the schema"));
                    }
                    None => {}
                }
            }
        }
    }
}

fn has_type(value: &Value, kind: &str) -> bool {
    match kind {
        "object" => value.is_object(),
        "array" => value.is_array(),
        "string" => value.is_string(),
        "boolean" => value.is_boolean(),
        "null" => value.is_null(),
        "number" => value.is_number(),
        "integer" => value.is_i64() || value.is_u64(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schemas(files: &[(&str, Value)]) -> Result<Schemas, String> {
        Schemas::from_files(
            files
                .iter()
                .map(|(n, v)| ((*n).to_owned(), v.clone()))
                .collect(),
        )
    }

    fn sample() -> Schemas {
        let common = json!({"$defs": {
            "port": {"type": "integer", "minimum": 1, "maximum": 65535},
        }});
        let thing = json!({
            "type": "object",
            "properties": {
                "kind": {"const": "thing"},
                "mode": {"enum": ["a", "b"]},
                "port": {"$ref": "common.json#/$defs/port"},
                "tags": {"type": "array", "items": {"$ref": "#/$defs/tag"}},
            },
            "required": ["kind", "port"],
            "additionalProperties": false,
            "$defs": {"tag": {"type": "string"}},
        });
        schemas(&[("common.json", common), ("thing.json", thing)]).unwrap()
    }

    #[test]
    fn accepts_what_matches() {
        let s = sample();
        let ok = json!({"kind": "thing", "mode": "b", "port": 80, "tags": ["x", "y"]});
        assert_eq!(s.validate("thing.json", &ok), [] as [String; 0]);
        assert_eq!(
            s.validate("thing.json", &json!({"kind": "thing", "port": 1})),
            [] as [String; 0]
        );
    }

    #[test]
    fn names_every_mismatch_and_where() {
        let s = sample();
        let bad = json!({"kind": "other", "mode": "c", "port": 0, "tags": ["x", 3], "extra": 1});
        let errors = s.validate("thing.json", &bad);
        for expected in [
            "/kind: expected \"thing\", got \"other\"",
            "/mode: \"c\" is not one of",
            "/port: 0 is below the minimum 1",
            "/tags/1: expected string, got 3",
            "/extra: not in the schema",
        ] {
            assert!(
                errors.iter().any(|e| e.starts_with(expected)),
                "{expected} not in {errors:?}"
            );
        }
        assert_eq!(errors.len(), 5, "{errors:?}");
        let errors = s.validate("thing.json", &json!({"kind": "thing", "port": 70000}));
        assert_eq!(errors, ["/port: 70000 is above the maximum 65535"]);
        let errors = s.validate("thing.json", &json!({"kind": "thing"}));
        assert_eq!(errors, ["/: missing \"port\""]);
        let errors = s.validate("thing.json", &json!([]));
        assert_eq!(errors, ["/: expected object, got []"]);
        let errors = s.validate("thing.json", &json!({"kind": "thing", "port": 1.5}));
        assert_eq!(errors, ["/port: expected integer, got 1.5"]);
        assert_eq!(s.validate("nope.json", &json!({})), ["no schema nope.json"]);
    }

    #[test]
    fn refuses_schemas_that_promise_what_it_does_not_check() {
        let open = json!({"type": "object", "properties": {}});
        let e = schemas(&[("a.json", open)]).err().unwrap();
        assert!(e.contains("additionalProperties: false"), "{e}");
        let pattern = json!({"type": "string", "pattern": "^a$"});
        let e = schemas(&[("a.json", pattern)]).err().unwrap();
        assert!(e.contains("unsupported keyword \"pattern\""), "{e}");
        let nested = json!({"$defs": {"x": {"type": "array", "items": {"oneOf": []}}}});
        let e = schemas(&[("a.json", nested)]).err().unwrap();
        assert!(
            e.contains("a.json#/$defs/x/items: unsupported keyword \"oneOf\""),
            "{e}"
        );
        let dangling = json!({"$ref": "b.json#/$defs/x"});
        let e = schemas(&[("a.json", dangling)]).err().unwrap();
        assert!(e.contains("points nowhere"), "{e}");
    }
}
