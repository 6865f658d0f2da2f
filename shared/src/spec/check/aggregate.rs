//! The `aggregate` section: group-by columns and measures.

use std::collections::HashSet;

use arrow::datatypes::SchemaRef;

use super::Checker;
use crate::spec::raw;
use crate::spec::values::{columns_hint, is_identifier, is_numeric};
use crate::spec::{AggFn, AggregateSpec, Measure};

impl Checker<'_> {
    /// `schema` is that of the rows aggregated when it is known (no SQL); the aggregate is
    /// `None` when any of it is wrong.
    pub(super) fn aggregate(
        &mut self,
        a: &raw::RawAggregate,
        schema: Option<&SchemaRef>,
    ) -> Option<AggregateSpec> {
        let problems_before = self.problems.len();
        // Group-by columns and measures name the output's columns: one namespace.
        let mut names = HashSet::new();
        for (i, g) in a.group_by.iter().enumerate() {
            if !names.insert(g.clone()) {
                self.problem(
                    format!("aggregate.group_by[{i}]"),
                    format!("`{g}` is repeated"),
                );
            }
            if let Some(s) = schema
                && s.index_of(g).is_err()
            {
                self.problem(
                    format!("aggregate.group_by[{i}]"),
                    format!("unknown column `{g}`: {}", columns_hint(s)),
                );
            }
        }
        if a.measures.is_empty() {
            self.problem("aggregate.measures", "no measures: give at least one");
        }
        let mut measures = Vec::new();
        for (i, m) in a.measures.iter().enumerate() {
            measures.extend(self.measure(
                &format!("aggregate.measures[{i}]"),
                m,
                schema,
                &mut names,
            ));
        }
        (self.problems.len() == problems_before).then(|| AggregateSpec {
            group_by: a.group_by.clone(),
            measures,
        })
    }

    /// One measure; `None` when its function is unknown.
    fn measure(
        &mut self,
        field: &str,
        m: &raw::RawMeasure,
        schema: Option<&SchemaRef>,
        names: &mut HashSet<String>,
    ) -> Option<Measure> {
        if !is_identifier(&m.name) || !names.insert(m.name.clone()) {
            self.problem(
                format!("{field}.name"),
                format!(
                    "`{}` must be a unique identifier (letters, digits, `_`)",
                    m.name
                ),
            );
        }
        let function = match m.function.as_str() {
            "count" => AggFn::Count,
            "sum" => AggFn::Sum,
            "avg" | "mean" => AggFn::Avg,
            "min" => AggFn::Min,
            "max" => AggFn::Max,
            other => {
                self.problem(
                    format!("{field}.fn"),
                    format!("unknown function `{other}`: expected count, sum, avg, min or max"),
                );
                return None;
            }
        };
        match (&m.column, schema) {
            (None, _) if function == AggFn::Count => {}
            (None, _) => self.problem(
                format!("{field}.column"),
                format!("`{}` needs a column", m.function),
            ),
            (Some(c), Some(s)) => match s.field_with_name(c) {
                Err(_) => self.problem(
                    format!("{field}.column"),
                    format!("unknown column `{c}`: {}", columns_hint(s)),
                ),
                Ok(f)
                    if matches!(function, AggFn::Sum | AggFn::Avg)
                        && !is_numeric(f.data_type()) =>
                {
                    self.problem(
                        format!("{field}.column"),
                        format!(
                            "`{}` needs a numeric column; `{c}` is {}",
                            m.function,
                            f.data_type()
                        ),
                    )
                }
                Ok(_) => {}
            },
            (Some(_), None) => {}
        }
        Some(Measure {
            name: m.name.clone(),
            function,
            column: m.column.clone(),
        })
    }
}
