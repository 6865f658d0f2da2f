//! The `validate` section: each rule checked against the column it names.

use std::collections::HashSet;
use std::sync::Arc;

use arrow::datatypes::{DataType, Schema, SchemaRef};
use regex::Regex;

use super::Checker;
use crate::spec::raw;
use crate::spec::values::{canonical_text, columns_hint, is_ordered, literal, plain};
use crate::spec::{Check, Rule};

/// The column a rule names, and where the rule stands in the spec.
struct Target<'r> {
    /// The rule's field path, `validate[i]`.
    field: String,
    column: &'r str,
    index: usize,
    data_type: DataType,
}

impl Target<'_> {
    fn rule(&self, check: Check, label: String) -> Rule {
        Rule {
            column: self.column.to_string(),
            index: self.index,
            check,
            label,
        }
    }
}

impl Checker<'_> {
    /// The rules written, plus a `not_null` for each column the schema declares not
    /// nullable; the `not_null` checks come first.
    pub(super) fn resolve_rules(
        &mut self,
        validate: &[raw::RawRule],
        schema: &SchemaRef,
    ) -> Vec<Rule> {
        let mut rules = Vec::new();
        for (i, r) in validate.iter().enumerate() {
            rules.extend(self.rules(i, r, schema));
        }
        for (index, f) in schema.fields().iter().enumerate() {
            if !f.is_nullable() {
                rules.insert(
                    rules
                        .iter()
                        .filter(|r| matches!(r.check, Check::NotNull))
                        .count(),
                    Rule {
                        column: f.name().clone(),
                        index,
                        check: Check::NotNull,
                        label: "not_null".into(),
                    },
                );
            }
        }
        rules
    }

    fn rules(&mut self, i: usize, r: &raw::RawRule, schema: &Schema) -> Vec<Rule> {
        let field = format!("validate[{i}]");
        let Ok(index) = schema.index_of(&r.column) else {
            self.problem(
                format!("{field}.column"),
                format!("unknown column `{}`: {}", r.column, columns_hint(schema)),
            );
            return Vec::new();
        };
        let target = Target {
            field,
            column: &r.column,
            index,
            data_type: schema.field(index).data_type().clone(),
        };
        let mut out = Vec::new();
        if r.not_null == Some(true) {
            out.push(target.rule(Check::NotNull, "not_null".into()));
        }
        self.bounds(&target, r, &mut out);
        if let Some(values) = &r.one_of {
            out.extend(self.one_of(&target, values));
        }
        if let Some(pattern) = &r.matches {
            out.extend(self.matches(&target, pattern));
        }
        if r.finite == Some(true) {
            out.extend(self.finite(&target));
        }
        if r.not_null.is_none()
            && r.min.is_none()
            && r.max.is_none()
            && r.one_of.is_none()
            && r.matches.is_none()
            && r.finite.is_none()
        {
            self.problem(
                &target.field,
                "the rule checks nothing: give not_null, min, max, one_of, matches or finite",
            );
        }
        out
    }

    /// `min` and `max`, and a range no value could pass.
    fn bounds(&mut self, t: &Target<'_>, r: &raw::RawRule, out: &mut Vec<Rule>) {
        let (field, data_type) = (&t.field, &t.data_type);
        for (name, bound) in [("min", &r.min), ("max", &r.max)] {
            let Some(bound) = bound else { continue };
            if !is_ordered(data_type) {
                self.problem(format!("{field}.{name}"), format!("`{name}` needs a numeric, decimal, date or timestamp column; `{}` is {data_type}", t.column));
                continue;
            }
            match literal(bound, data_type) {
                Some(a) => out.push(t.rule(
                    if name == "min" {
                        Check::Min(a)
                    } else {
                        Check::Max(a)
                    },
                    format!("{name}: {}", plain(bound)),
                )),
                None => self.problem(
                    format!("{field}.{name}"),
                    format!("{} is not a value of type {data_type}", plain(bound)),
                ),
            }
        }
        if let (Some(Check::Min(lo)), Some(Check::Max(hi))) = (
            out.iter()
                .find(|x| matches!(x.check, Check::Min(_)))
                .map(|x| &x.check),
            out.iter()
                .find(|x| matches!(x.check, Check::Max(_)))
                .map(|x| &x.check),
        ) && let Ok(gt) = arrow::compute::kernels::cmp::gt(lo, hi)
            && gt.value(0)
        {
            self.problem(
                format!("{field}.min"),
                "min is greater than max: no value could pass",
            );
        }
    }

    /// `one_of`: kept with the values that are of the column's type, each wrong one reported.
    fn one_of(&mut self, t: &Target<'_>, values: &[serde_json::Value]) -> Option<Rule> {
        let (field, data_type) = (&t.field, &t.data_type);
        if values.is_empty() {
            self.problem(
                format!("{field}.one_of"),
                "the list of allowed values is empty",
            );
            return None;
        }
        let mut set = HashSet::new();
        for (j, v) in values.iter().enumerate() {
            match literal(v, data_type).and_then(|a| canonical_text(&a).ok()) {
                Some(text) => {
                    set.insert(text.value(0).to_string());
                }
                None => self.problem(
                    format!("{field}.one_of[{j}]"),
                    format!("{} is not a value of type {data_type}", plain(v)),
                ),
            }
        }
        Some(t.rule(
            Check::OneOf(Arc::new(set)),
            format!(
                "one_of: [{}]",
                values.iter().map(plain).collect::<Vec<_>>().join(", ")
            ),
        ))
    }

    fn matches(&mut self, t: &Target<'_>, pattern: &str) -> Option<Rule> {
        let (field, data_type) = (&t.field, &t.data_type);
        if !matches!(data_type, DataType::Utf8 | DataType::LargeUtf8) {
            self.problem(
                format!("{field}.matches"),
                format!(
                    "`matches` needs a utf8 column; `{}` is {data_type}",
                    t.column
                ),
            );
            return None;
        }
        match Regex::new(pattern) {
            Ok(re) => Some(t.rule(Check::Matches(re), format!("matches: {pattern}"))),
            Err(e) => {
                self.problem(
                    format!("{field}.matches"),
                    format!("bad regular expression: {e}"),
                );
                None
            }
        }
    }

    fn finite(&mut self, t: &Target<'_>) -> Option<Rule> {
        let (field, data_type) = (&t.field, &t.data_type);
        if !matches!(data_type, DataType::Float32 | DataType::Float64) {
            self.problem(
                format!("{field}.finite"),
                format!(
                    "`finite` needs a float column; `{}` is {data_type}",
                    t.column
                ),
            );
            return None;
        }
        Some(t.rule(Check::Finite, "finite".into()))
    }
}
