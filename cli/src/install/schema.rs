//! The chart's `values.schema.json`, applied by `weft install` as helm
//! applies it, so that both refuse the same values with the same reasons.
//!
//! Only what that schema uses is understood: `type` (object, string,
//! integer, boolean), `properties`, `additionalProperties: false`,
//! `required`, `enum`, `pattern`, `minLength`, `maxLength`, `minimum`,
//! `maximum`. A keyword outside that list in the schema is a bug caught by
//! this module's tests, not silently ignored at run time.

use serde_json::Value;

/// The keywords [`check`] understands; the tests hold the chart's schema to
/// them.
pub const KEYWORDS: &[&str] = &[
    "$schema",
    "title",
    "description",
    "type",
    "properties",
    "additionalProperties",
    "required",
    "enum",
    "pattern",
    "minLength",
    "maxLength",
    "minimum",
    "maximum",
];

/// Every way `value` breaks `schema`, one line each, named by the dotted
/// path of the value (`webhook.failurePolicy: ...`).
pub fn check(schema: &Value, value: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    walk(schema, value, "", &mut problems);
    problems
}

fn walk(schema: &Value, value: &Value, path: &str, problems: &mut Vec<String>) {
    let at = |key: &str| if path.is_empty() { key.to_owned() } else { format!("{path}.{key}") };
    let here = if path.is_empty() { "the values" } else { path };
    if let Some(want) = schema.get("type").and_then(Value::as_str)
        && !has_type(value, want)
    {
        problems.push(format!("{here}: expected {}, got {}", article(want), describe(value)));
        return;
    }
    if let Value::Object(map) = value {
        let properties = schema.get("properties").and_then(Value::as_object);
        for (key, child) in map {
            match properties.and_then(|p| p.get(key)) {
                Some(child_schema) => walk(child_schema, child, &at(key), problems),
                None if schema.get("additionalProperties") == Some(&Value::Bool(false)) => {
                    let known: Vec<&str> = properties.into_iter().flatten().map(|(k, _)| k.as_str()).collect();
                    problems.push(format!("{}: no such value (known here: {})", at(key), known.join(", ")));
                }
                None => {}
            }
        }
        for key in schema.get("required").and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str) {
            if !map.contains_key(key) {
                problems.push(format!("{}: missing", at(key)));
            }
        }
    }
    if let Some(allowed) = schema.get("enum").and_then(Value::as_array)
        && !allowed.contains(value)
    {
        let names: Vec<String> =
            allowed.iter().map(|a| a.as_str().map_or_else(|| a.to_string(), str::to_owned)).collect();
        problems.push(format!("{here}: {} is not one of {}", describe(value), names.join(", ")));
    }
    if let Value::String(s) = value {
        if let Some(pattern) = schema.get("pattern").and_then(Value::as_str) {
            match regex::Regex::new(pattern) {
                Ok(re) if re.is_match(s) => {}
                Ok(_) => problems.push(format!("{here}: {s:?} does not match {pattern}")),
                Err(e) => problems.push(format!("{here}: the schema's pattern {pattern:?} is invalid: {e}")),
            }
        }
        let chars = s.chars().count() as u64;
        if let Some(min) = schema.get("minLength").and_then(Value::as_u64)
            && chars < min
        {
            problems.push(format!("{here}: shorter than {min} characters"));
        }
        if let Some(max) = schema.get("maxLength").and_then(Value::as_u64)
            && chars > max
        {
            problems.push(format!("{here}: longer than {max} characters"));
        }
    }
    if let Some(n) = value.as_f64() {
        if let Some(min) = schema.get("minimum").and_then(Value::as_f64)
            && n < min
        {
            problems.push(format!("{here}: {value} is less than {min}"));
        }
        if let Some(max) = schema.get("maximum").and_then(Value::as_f64)
            && n > max
        {
            problems.push(format!("{here}: {value} is more than {max}"));
        }
    }
}

fn has_type(value: &Value, want: &str) -> bool {
    match want {
        "object" => value.is_object(),
        "string" => value.is_string(),
        "boolean" => value.is_boolean(),
        // 3 but not 3.5 (nor 3.0: the CLI's types are integers).
        "integer" => value.is_i64() || value.is_u64(),
        "number" => value.is_number(),
        _ => false,
    }
}

fn article(ty: &str) -> String {
    match ty {
        "object" => "a map of values".to_owned(),
        "integer" => "an integer".to_owned(),
        other => format!("a {other}"),
    }
}

/// A value as an error message shows it.
fn describe(value: &Value) -> String {
    match value {
        Value::Null => "nothing (null)".to_owned(),
        Value::Bool(b) => format!("the boolean {b}"),
        Value::Number(n) => format!("the number {n}"),
        Value::String(s) => format!("the string {s:?}"),
        Value::Array(_) => "a list".to_owned(),
        Value::Object(_) => "a map".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn schema() -> Value {
        json!({
            "type": "object",
            "additionalProperties": false,
            "required": ["name", "mode", "n", "on", "nested"],
            "properties": {
                "name": {"type": "string", "pattern": "^[a-z]+$", "minLength": 2, "maxLength": 4},
                "mode": {"type": "string", "enum": ["a", "b"]},
                "n": {"type": "integer", "minimum": 1, "maximum": 30},
                "on": {"type": "boolean"},
                "nested": {"type": "object", "additionalProperties": false, "required": ["x"], "properties": {"x": {"type": "string"}}},
            },
        })
    }

    #[test]
    fn each_rule_names_the_value_and_says_why() {
        let good = json!({"name": "abc", "mode": "a", "n": 10, "on": true, "nested": {"x": ""}});
        assert_eq!(check(&schema(), &good), Vec::<String>::new());
        let with = |key: &str, v: Value| {
            let mut doc = good.clone();
            doc[key] = v;
            check(&schema(), &doc)
        };
        for (key, value, want) in [
            ("name", json!("ABC"), r#"name: "ABC" does not match ^[a-z]+$"#),
            ("name", json!("a"), "name: shorter than 2 characters"),
            ("name", json!("abcde"), "name: longer than 4 characters"),
            ("name", json!(7), "name: expected a string, got the number 7"),
            ("mode", json!("c"), r#"mode: the string "c" is not one of a, b"#),
            ("n", json!(0), "n: 0 is less than 1"),
            ("n", json!(31), "n: 31 is more than 30"),
            ("n", json!(2.5), "n: expected an integer, got the number 2.5"),
            ("n", json!("10"), r#"n: expected an integer, got the string "10""#),
            ("n", Value::Null, "n: expected an integer, got nothing (null)"),
            ("on", json!("yes"), r#"on: expected a boolean, got the string "yes""#),
            ("nested", json!({"x": "", "y": 1}), "nested.y: no such value (known here: x)"),
            ("nested", json!({}), "nested.x: missing"),
            ("nested", json!([1]), "nested: expected a map of values, got a list"),
            ("extra", json!(1), "extra: no such value (known here: mode, n, name, nested, on)"),
        ] {
            assert_eq!(with(key, value.clone()), [want], "{key}: {value}");
        }
        // Every problem at once.
        let bad = json!({"name": "A", "mode": "c", "n": 0, "on": true, "nested": {"x": ""}});
        assert_eq!(check(&schema(), &bad).len(), 4, "{:?}", check(&schema(), &bad));
    }
}
