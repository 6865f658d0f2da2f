//! The `transform` section: the lookup tables and the SQL.

use std::collections::HashSet;

use super::Checker;
use crate::spec::LookupSpec;
use crate::spec::raw;
use crate::spec::values::is_identifier;

impl Checker<'_> {
    /// The lookup tables; the SQL is kept as written (only refused when empty).
    pub(super) fn resolve_transform(&mut self, raw: &raw::RawTransform) -> Vec<LookupSpec> {
        let mut lookups = Vec::new();
        let mut lookup_names = HashSet::new();
        for (i, l) in raw.lookups.iter().enumerate() {
            let field = format!("transform.lookups[{i}]");
            if !is_identifier(&l.name) || l.name.eq_ignore_ascii_case("input") {
                self.problem(
                    format!("{field}.name"),
                    format!(
                        "`{}` cannot name a table: use letters, digits and `_`, not `input`",
                        l.name
                    ),
                );
            } else if !lookup_names.insert(l.name.to_ascii_lowercase()) {
                self.problem(
                    format!("{field}.name"),
                    format!("lookup `{}` is declared twice", l.name),
                );
            }
            let location = self.location(&format!("{field}.location"), &l.location);
            let format = self.format(&format!("{field}.format"), &l.format);
            let csv = self.csv(&format!("{field}.csv"), l.csv.as_ref());
            let schema = if l.schema.is_empty() {
                None
            } else {
                self.schema(&format!("{field}.schema"), &l.schema, false)
            };
            if l.etag.as_deref().is_some_and(|e| e.trim().is_empty()) {
                self.problem(
                    format!("{field}.etag"),
                    "the version is empty: remove the field to read the lookup as planned",
                );
            }
            if let (Some(location), Some(format)) = (location, format) {
                lookups.push(LookupSpec {
                    name: l.name.clone(),
                    location,
                    format,
                    csv,
                    schema,
                    etag: l.etag.clone(),
                });
            }
        }
        if let Some(sql) = &raw.sql
            && sql.trim().is_empty()
        {
            self.problem(
                "transform.sql",
                "the SQL is empty: remove the field to pass rows through",
            );
        }
        lookups
    }
}
