//! YAML (and therefore JSON) source text → `serde_json::Value` plus the line of every path.
//!
//! serde-based YAML crates lose positions once a value is built, but a spec error must
//! name the line of the field at fault even when it is found after deserialisation
//! (a rule naming an unknown column). So the document is read once from the event
//! stream, recording the line where each path (`input.schema[2].type`) starts.

use std::collections::HashMap;

use serde_json::{Map, Number, Value};
use yaml_rust2::Yaml;
use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::{Marker, TScalarStyle};

/// A parsed spec document: the value and where each path starts.
#[derive(Debug, Default)]
pub struct Document {
    /// The document as JSON values.
    pub value: Value,
    lines: HashMap<String, usize>,
}

impl Document {
    /// The 1-based line of `path`, or of its nearest ancestor that appears in the source.
    pub fn line_of(&self, path: &str) -> Option<usize> {
        let mut p = path;
        loop {
            if let Some(line) = self.lines.get(p) {
                return Some(*line);
            }
            let cut = p.rfind(['.', '['])?;
            p = &p[..cut];
        }
    }
}

/// A syntax error with its position.
#[derive(Debug)]
pub struct SyntaxError {
    /// 1-based line.
    pub line: usize,
    /// What the parser said.
    pub message: String,
}

enum Frame {
    Map {
        path: String,
        map: Map<String, Value>,
        key: Option<String>,
    },
    Seq {
        path: String,
        items: Vec<Value>,
    },
}

#[derive(Default)]
struct Builder {
    stack: Vec<Frame>,
    root: Option<Value>,
    lines: HashMap<String, usize>,
    error: Option<SyntaxError>,
    documents: usize,
}

impl Builder {
    /// The path the next value will have, and records its line.
    fn next_path(&mut self, line: usize) -> Option<String> {
        let path = match self.stack.last() {
            None => String::new(),
            Some(Frame::Map { path, key, .. }) => {
                let key = key.as_ref()?;
                if path.is_empty() {
                    key.clone()
                } else {
                    format!("{path}.{key}")
                }
            }
            Some(Frame::Seq { path, items }) => format!("{path}[{}]", items.len()),
        };
        self.lines.entry(path.clone()).or_insert(line);
        Some(path)
    }

    fn push_value(&mut self, value: Value, line: usize) {
        match self.stack.last_mut() {
            None => self.root = Some(value),
            Some(Frame::Seq { items, .. }) => items.push(value),
            Some(Frame::Map { map, key, .. }) => match key.take() {
                Some(k) => {
                    if map.contains_key(&k) && self.error.is_none() {
                        self.error = Some(SyntaxError {
                            line,
                            message: format!("duplicate key `{k}`"),
                        });
                    }
                    map.insert(k, value);
                }
                None => {
                    // A key: only strings (or scalars shown as strings) name fields.
                    let k = match value {
                        Value::String(s) => s,
                        Value::Null => "null".into(),
                        Value::Bool(b) => b.to_string(),
                        Value::Number(n) => n.to_string(),
                        _ => {
                            if self.error.is_none() {
                                self.error = Some(SyntaxError {
                                    line,
                                    message: "a mapping key must be a plain value".into(),
                                });
                            }
                            "?".into()
                        }
                    };
                    *key = Some(k);
                }
            },
        }
    }

    fn in_key_position(&self) -> bool {
        matches!(self.stack.last(), Some(Frame::Map { key: None, .. }))
    }
}

fn scalar(value: String, style: TScalarStyle) -> Value {
    if style != TScalarStyle::Plain {
        return Value::String(value);
    }
    match Yaml::from_str(&value) {
        Yaml::Integer(i) => Value::Number(i.into()),
        Yaml::Real(r) => match r.parse::<f64>().ok().and_then(Number::from_f64) {
            Some(n) => Value::Number(n),
            None => Value::String(value),
        },
        Yaml::Boolean(b) => Value::Bool(b),
        Yaml::Null => Value::Null,
        _ => Value::String(value),
    }
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        if self.error.is_some() {
            return;
        }
        let line = mark.line();
        match ev {
            Event::DocumentStart => {
                self.documents += 1;
                if self.documents > 1 {
                    self.error = Some(SyntaxError {
                        line,
                        message: "a spec file holds one YAML document".into(),
                    });
                }
            }
            Event::Alias(_) => {
                self.error = Some(SyntaxError {
                    line,
                    message: "YAML aliases are not supported in a job spec".into(),
                });
            }
            Event::Scalar(v, style, _, _) => {
                let value = scalar(v, style);
                if self.in_key_position() {
                    // The key's line is the field's line, whatever line its value starts on.
                    self.push_value(value, line);
                    self.next_path(line);
                } else {
                    self.next_path(line);
                    self.push_value(value, line);
                }
            }
            Event::MappingStart(..) | Event::SequenceStart(..) => {
                if self.in_key_position() {
                    self.error = Some(SyntaxError {
                        line,
                        message: "a mapping key must be a plain value".into(),
                    });
                    return;
                }
                let path = self.next_path(line).unwrap_or_default();
                self.stack.push(if matches!(ev, Event::MappingStart(..)) {
                    Frame::Map {
                        path,
                        map: Map::new(),
                        key: None,
                    }
                } else {
                    Frame::Seq {
                        path,
                        items: Vec::new(),
                    }
                });
            }
            Event::MappingEnd | Event::SequenceEnd => {
                let value = match self.stack.pop() {
                    Some(Frame::Map { map, .. }) => Value::Object(map),
                    Some(Frame::Seq { items, .. }) => Value::Array(items),
                    None => return,
                };
                self.push_value(value, line);
            }
            _ => {}
        }
    }
}

/// Parses YAML 1.2 (a superset of JSON) into a [`Document`].
pub fn parse(text: &str) -> Result<Document, SyntaxError> {
    let mut builder = Builder::default();
    let mut parser = Parser::new_from_str(text);
    parser.load(&mut builder, true).map_err(|e| SyntaxError {
        line: e.marker().line(),
        message: e.info().to_string(),
    })?;
    if let Some(e) = builder.error {
        return Err(e);
    }
    Ok(Document {
        value: builder.root.unwrap_or(Value::Null),
        lines: builder.lines,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_the_line_of_nested_paths() {
        let doc = parse("name: x\ninput:\n  schema:\n    - { name: a, type: int64 }\n    - name: b\n      type: utf8\n").unwrap();
        assert_eq!(doc.line_of("name"), Some(1));
        assert_eq!(doc.line_of("input.schema[0].type"), Some(4));
        assert_eq!(doc.line_of("input.schema[1].type"), Some(6));
        assert_eq!(doc.line_of("input.schema[1].missing"), Some(5));
        assert_eq!(doc.value["input"]["schema"][1]["type"], "utf8");
    }

    #[test]
    fn quoted_scalars_stay_strings_and_plain_ones_are_typed() {
        let doc = parse("a: \"1\"\nb: 1\nc: 0.5\nd: true\ne: ~\n").unwrap();
        assert_eq!(doc.value["a"], "1");
        assert_eq!(doc.value["b"], 1);
        assert_eq!(doc.value["c"], 0.5);
        assert_eq!(doc.value["d"], true);
        assert!(doc.value["e"].is_null());
    }

    #[test]
    fn duplicate_keys_are_refused_with_their_line() {
        let err = parse("a: 1\nb: 2\na: 3\n").unwrap_err();
        assert_eq!(err.line, 3);
        assert!(err.message.contains("duplicate key `a`"));
    }

    #[test]
    fn json_is_accepted() {
        let doc = parse("{\"name\": \"x\", \"n\": [1, 2]}").unwrap();
        assert_eq!(doc.value["n"][1], 2);
    }
}
