//! The table derived from a job, and how a later job's output is merged into it.

use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Fields, Schema, TimeUnit};

use super::*;

fn schema() -> Schema {
    Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("Price", DataType::Decimal128(12, 2), true),
        Field::new("ts", DataType::Timestamp(TimeUnit::Microsecond, None), true),
        Field::new(
            "tags",
            DataType::List(Arc::new(Field::new("item", DataType::Utf8, true))),
            true,
        ),
        Field::new(
            "geo",
            DataType::Struct(Fields::from(vec![
                Field::new("Lat", DataType::Float64, true),
                Field::new("lon", DataType::Float32, true),
            ])),
            true,
        ),
        Field::new("year", DataType::Int32, true),
        Field::new("region", DataType::Utf8, true),
    ])
}

fn spec(projection: bool) -> (JobSpec, CatalogSpec) {
    let yaml = format!(
        r#"
name: t
work: s3://bkt/work/
input: {{location: s3://bkt/in/, format: csv, schema: [{{name: id, type: int64}}, {{name: year, type: int32}}, {{name: region, type: string}}]}}
output:
  location: s3://bkt/out/orders
  partition_by: [year, region]
  catalog: {{type: glue, database: curated, table: orders, partition_projection: {projection}}}
rejects: {{location: s3://bkt/rejects/}}
"#
    );
    let spec = JobSpec::parse("t.yaml", &yaml).expect("spec");
    let cat = spec.output.catalog.clone().expect("catalog");
    (spec, cat)
}

fn part(path: &str) -> PartitionSummary {
    PartitionSummary {
        path: path.into(),
        files: 1,
        rows: 1,
        bytes: 1,
    }
}

#[test]
fn the_table_has_hive_types_lowercase_names_and_no_partition_columns() {
    let (spec, cat) = spec(false);
    let t = table_of(&spec, &cat, &schema()).expect("table");
    let cols: Vec<String> = t
        .columns
        .iter()
        .map(|c| format!("{} {}", c.name, c.hive_type))
        .collect();
    assert_eq!(
        cols,
        [
            "id bigint",
            "price decimal(12,2)",
            "ts timestamp",
            "tags array<string>",
            "geo struct<lat:double,lon:float>"
        ]
    );
    let keys: Vec<String> = t
        .partition_keys
        .iter()
        .map(|c| format!("{} {}", c.name, c.hive_type))
        .collect();
    assert_eq!(keys, ["year int", "region string"]);
    assert_eq!(t.location, "s3://bkt/out/orders/");
    assert_eq!(t.parameters["classification"], "parquet");
}

#[test]
fn a_type_hive_lacks_is_refused_naming_the_column() {
    let (spec, cat) = spec(false);
    let s = Schema::new(vec![
        Field::new("n", DataType::UInt64, true),
        Field::new("year", DataType::Int32, true),
        Field::new("region", DataType::Utf8, true),
    ]);
    let e = table_of(&spec, &cat, &s).expect_err("refused").to_string();
    assert!(e.contains("column `n`") && e.contains("UInt64"), "{e}");
}

#[test]
fn partitions_are_unescaped_values_at_their_paths() {
    let (spec, cat) = spec(false);
    let t = table_of(&spec, &cat, &schema()).expect("table");
    let p = partitions_of(
        &t,
        &spec.output.partition_by,
        &[
            part("year=1998/region=EU%2FWest"),
            part("year=__HIVE_DEFAULT_PARTITION__/region=Zürich 1%25"),
        ],
    )
    .expect("partitions");
    assert_eq!(p[0].values, ["1998", "EU/West"]);
    assert_eq!(
        p[0].location,
        "s3://bkt/out/orders/year=1998/region=EU%2FWest/"
    );
    assert_eq!(p[1].values, ["__HIVE_DEFAULT_PARTITION__", "Zürich 1%"]);
}

#[test]
fn a_new_nullable_column_is_appended_and_a_changed_type_refused() {
    let (spec, cat) = spec(false);
    let old = table_of(&spec, &cat, &schema()).expect("table");
    let mut wider = schema().fields().iter().cloned().collect::<Vec<_>>();
    wider.insert(1, Arc::new(Field::new("note", DataType::Utf8, true)));
    let new = table_of(&spec, &cat, &Schema::new(wider)).expect("table");
    let merged = merge(&old, &new).expect("merged");
    assert_eq!(merged.columns.len(), old.columns.len() + 1);
    assert_eq!(merged.columns.last().map(|c| c.name.as_str()), Some("note"));
    assert_eq!(merge(&merged, &new).expect("same"), merged);

    let mut changed = schema().fields().iter().cloned().collect::<Vec<_>>();
    changed[1] = Arc::new(Field::new("Price", DataType::Float64, true));
    let new = table_of(&spec, &cat, &Schema::new(changed)).expect("table");
    let e = merge(&old, &new).expect_err("refused").to_string();
    assert!(
        e.contains("`price` is decimal(12,2) in the table and double"),
        "{e}"
    );

    let mut moved = old.clone();
    moved.location = "s3://bkt/elsewhere/".into();
    let e = merge(&moved, &old).expect_err("refused").to_string();
    assert!(e.contains("the table reads `s3://bkt/elsewhere/`"), "{e}");

    let mut repartitioned = old.clone();
    repartitioned.partition_keys.pop();
    let e = merge(&repartitioned, &old)
        .expect_err("refused")
        .to_string();
    assert!(e.contains("partitioned by (year int)"), "{e}");
}

#[test]
fn projection_lists_every_value_and_a_template() {
    let (spec, cat) = spec(true);
    let mut t = table_of(&spec, &cat, &schema()).expect("table");
    let by = &spec.output.partition_by;
    let parts = partitions_of(
        &t,
        by,
        &[part("year=1998/region=EU"), part("year=1997/region=US")],
    )
    .expect("partitions");
    project(&mut t, by, &parts).expect("projected");
    let later = partitions_of(&t, by, &[part("year=1999/region=EU")]).expect("partitions");
    project(&mut t, by, &later).expect("projected");
    assert_eq!(t.parameters["projection.enabled"], "true");
    assert_eq!(t.parameters["projection.year.values"], "1997,1998,1999");
    assert_eq!(t.parameters["projection.region.values"], "EU,US");
    assert_eq!(
        t.parameters["storage.location.template"],
        "s3://bkt/out/orders/year=${year}/region=${region}/"
    );
    let odd = partitions_of(&t, by, &[part("year=1999/region=EU%2FWest")]).expect("partitions");
    let e = project(&mut t, by, &odd).expect_err("refused").to_string();
    assert!(e.contains("`EU/West`"), "{e}");
}

#[test]
fn spec_checks_refuse_bad_names_local_output_and_projection_without_partitions() {
    let bad = r#"
name: t
input: {location: in/, format: csv, schema: [{name: id, type: int64}]}
output:
  location: out/
  catalog: {type: hive, database: Curated, table: "a-b", partition_projection: true}
rejects: {location: rejects/}
"#;
    let e = JobSpec::parse("t.yaml", bad)
        .expect_err("refused")
        .to_string();
    for want in [
        "output.catalog.type",
        "unknown catalog `hive`",
        "`Curated` is not a Glue name",
        "`a-b` is not a Glue name",
        "is a local directory",
        "partition projection needs partitions",
    ] {
        assert!(e.contains(want), "missing {want:?} in {e}");
    }
}
