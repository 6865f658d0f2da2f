//! `output.catalog` against moto's Glue and S3 (started by infra/test.sh), checked with
//! boto3 and pyarrow as independent readers: the first job creates the table and its
//! partitions, a re-finalize changes nothing, a later job adds a column and partitions,
//! an incompatible job is refused without touching the table, projection mode writes
//! properties instead of partitions.
#![allow(clippy::unwrap_used)]

mod common;

use std::process::Command;
use std::sync::Arc;

use fanout::env::{AwsClients, Env};
use fanout::job::Manifest;
use fanout::metrics::MemoryMetrics;
use fanout::spec::JobSpec;
use serde_json::Value;

fn require_moto() -> String {
    let url = std::env::var("AWS_ENDPOINT_URL").unwrap_or_default();
    assert!(
        url.starts_with("http://127.0.0.1"),
        "AWS_ENDPOINT_URL must point at moto on 127.0.0.1: run the suite with infra/test.sh"
    );
    url
}

fn unique(prefix: &str) -> String {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    format!(
        "{prefix}_{}_{}",
        std::process::id(),
        N.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
    )
}

/// A bucket with `objects` CSV objects under `raw/<batch>/` (regions cycling through
/// `regions`), and a Glue database.
struct World {
    clients: AwsClients,
    bucket: String,
    database: String,
}

impl World {
    async fn new() -> World {
        let clients = AwsClients::load().await;
        let bucket = unique("fanout-glue").replace('_', "-");
        clients
            .s3
            .create_bucket()
            .bucket(&bucket)
            .send()
            .await
            .unwrap();
        let database = unique("curated");
        clients
            .glue
            .create_database()
            .database_input(
                aws_sdk_glue::types::DatabaseInput::builder()
                    .name(&database)
                    .build()
                    .unwrap(),
            )
            .send()
            .await
            .unwrap();
        World {
            clients,
            bucket,
            database,
        }
    }

    async fn upload(&self, batch: &str, regions: &[&str], rows: u64) {
        for (f, region) in regions.iter().enumerate() {
            let mut s = String::from("id,region,amount\n");
            for i in 0..rows {
                s.push_str(&format!(
                    "{},{region},{}.{:02}\n",
                    f as u64 * rows + i,
                    i % 50,
                    i % 100
                ));
            }
            self.clients
                .s3
                .put_object()
                .bucket(&self.bucket)
                .key(format!("raw/{batch}/part-{f}.csv"))
                .body(s.into_bytes().into())
                .send()
                .await
                .unwrap();
        }
    }

    fn spec(&self, job: &str, batch: &str, table: &str, sql: &str, extra: &str) -> JobSpec {
        let b = &self.bucket;
        let text = format!(
            "name: {job}\njob_id: {job}\nwork: s3://{b}/work/\ninput:\n  location: s3://{b}/raw/{batch}/\n  format: csv\n  schema:\n    - {{ name: id, type: int64 }}\n    - {{ name: region, type: utf8 }}\n    - {{ name: amount, type: \"decimal(10,2)\" }}\n\
             transform: {{ sql: \"{sql}\" }}\n\
             output:\n  location: s3://{b}/tables/{table}/\n  partition_by: [region]\n  catalog: {{ type: glue, database: {db}, table: {table}{extra} }}\n\
             rejects: {{ location: s3://{b}/rejects/ }}\n",
            db = self.database
        );
        JobSpec::parse("glue.yaml", &text).unwrap()
    }
}

async fn run(spec: &JobSpec) -> fanout::Result<Manifest> {
    let env = Env::aws(Arc::new(MemoryMetrics::new())).await;
    let opts = fanout::runner::RunOptions {
        workers: 2,
        ..Default::default()
    };
    fanout::runner::run_local(&env, spec, &opts, Arc::new(fanout::runner::Silent))
        .await
        .unwrap()
        .result
}

/// boto3's view of the table and its partitions, and pyarrow's row count over every
/// partition location the catalog lists (what Athena would read).
fn catalog_view(database: &str, table: &str) -> Value {
    let script = r#"
import json, sys, os, boto3
import pyarrow.dataset as ds, pyarrow.fs as pafs
db, name = sys.argv[1], sys.argv[2]
glue = boto3.client("glue")
t = glue.get_table(DatabaseName=db, Name=name)["Table"]
parts = []
for page in glue.get_paginator("get_partitions").paginate(DatabaseName=db, TableName=name):
    parts += page["Partitions"]
s3 = pafs.S3FileSystem(endpoint_override=os.environ["AWS_ENDPOINT_URL"], region="us-east-1")
rows = 0
for p in parts:
    loc = p["StorageDescriptor"]["Location"]
    rows += ds.dataset(loc.removeprefix("s3://"), filesystem=s3, format="parquet").count_rows()
sd = t["StorageDescriptor"]
print(json.dumps({
    "columns": [f'{c["Name"]} {c["Type"]}' for c in sd["Columns"]],
    "keys": [f'{c["Name"]} {c["Type"]}' for c in t.get("PartitionKeys", [])],
    "location": sd["Location"],
    "serde": sd["SerdeInfo"]["SerializationLibrary"],
    "input_format": sd["InputFormat"],
    "parameters": t.get("Parameters", {}),
    "partitions": sorted([p["Values"], p["StorageDescriptor"]["Location"]] for p in parts),
    "partition_rows": rows,
}))
"#;
    let out = common::run_ok(
        Command::new(common::python())
            .arg("-c")
            .arg(script)
            .arg(database)
            .arg(table)
            .env("AWS_DEFAULT_REGION", "us-east-1"),
    );
    serde_json::from_str(&out).unwrap()
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn jobs_register_their_output_as_one_glue_table() {
    require_moto();
    let w = World::new().await;
    w.upload("b1", &["EU", "NA", "APAC"], 500).await;
    let spec = w.spec("glue-1", "b1", "orders", "SELECT * FROM input", "");
    let m = run(&spec).await.unwrap();
    let reg = m.catalog.as_ref().unwrap();
    assert_eq!((reg.table.as_str(), reg.partitions), ("orders", 3));

    let view = catalog_view(&w.database, "orders");
    assert_eq!(
        strings(&view["columns"]),
        ["id bigint", "amount decimal(10,2)"]
    );
    assert_eq!(strings(&view["keys"]), ["region string"]);
    let b = &w.bucket;
    assert_eq!(view["location"], format!("s3://{b}/tables/orders/"));
    assert_eq!(
        view["serde"],
        "org.apache.hadoop.hive.ql.io.parquet.serde.ParquetHiveSerDe"
    );
    let parts: Vec<Value> = view["partitions"].as_array().unwrap().clone();
    assert_eq!(
        parts[0],
        serde_json::json!([["APAC"], format!("s3://{b}/tables/orders/region=APAC/")])
    );
    assert_eq!(parts.len(), 3);
    assert_eq!(view["partition_rows"], 1500);
    assert_eq!(m.counts.written, 1500);

    // Finalize again: nothing changes in the catalog.
    let env = Env::aws(Arc::new(MemoryMetrics::new())).await;
    let again = fanout::reducer::finalize_job(
        &env,
        &spec.work,
        &fanout::ids::JobId::parse("glue-1").unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(again.catalog, m.catalog);
    assert_eq!(catalog_view(&w.database, "orders"), view);

    // A later job with a new column and a new region: the column is appended, the
    // partition added, the old ones kept.
    w.upload("b2", &["EU", "LATAM"], 200).await;
    let wider = w.spec(
        "glue-2",
        "b2",
        "orders",
        "SELECT id, 'late' AS note, region, amount FROM input",
        "",
    );
    run(&wider).await.unwrap();
    let view2 = catalog_view(&w.database, "orders");
    assert_eq!(
        strings(&view2["columns"]),
        ["id bigint", "amount decimal(10,2)", "note string"]
    );
    assert_eq!(view2["partitions"].as_array().unwrap().len(), 4);
    assert_eq!(view2["partition_rows"], 1900);

    // A job whose column changed type is refused; the table is as it was.
    let changed = w.spec(
        "glue-3",
        "b2",
        "orders",
        "SELECT id, region, CAST(amount AS DOUBLE) AS amount FROM input",
        "",
    );
    let err = run(&changed).await.unwrap_err().to_string();
    assert!(
        err.contains("column `amount` is decimal(10,2) in the table and double"),
        "{err}"
    );
    assert_eq!(catalog_view(&w.database, "orders"), view2);

    // The refused job's files stayed staged under work, out of every reader's sight;
    // the succeeded jobs' staged copies were removed after their manifests. gc collects
    // the refused job's.
    let env = Env::aws(Arc::new(MemoryMetrics::new())).await;
    let work = env.store(&spec.work).unwrap();
    let staged = |id: &str| {
        let work = work.clone();
        let prefix = format!("jobs/{id}/staged/");
        async move { work.list(&prefix).await.unwrap().len() }
    };
    assert_eq!((staged("glue-1").await, staged("glue-2").await), (0, 0));
    assert_eq!(staged("glue-3").await, 2);
    let g = fanout::gc::collect_garbage(
        &env,
        &spec.work,
        &fanout::ids::JobId::parse("glue-3").unwrap(),
        true,
        false,
    )
    .await
    .unwrap();
    assert_eq!((g.staged.len(), g.outputs.len()), (2, 0));
    assert_eq!(staged("glue-3").await, 0);
}

#[tokio::test]
async fn projection_mode_lists_partition_values_in_the_table() {
    require_moto();
    let w = World::new().await;
    w.upload("p1", &["EU", "NA"], 100).await;
    let extra = ", partition_projection: true";
    run(&w.spec("proj-1", "p1", "events", "SELECT * FROM input", extra))
        .await
        .unwrap();
    w.upload("p2", &["APAC"], 100).await;
    run(&w.spec("proj-2", "p2", "events", "SELECT * FROM input", extra))
        .await
        .unwrap();
    let view = catalog_view(&w.database, "events");
    let p = &view["parameters"];
    assert_eq!(p["projection.enabled"], "true");
    assert_eq!(p["projection.region.type"], "enum");
    assert_eq!(p["projection.region.values"], "APAC,EU,NA");
    assert_eq!(
        p["storage.location.template"],
        format!("s3://{}/tables/events/region=${{region}}/", w.bucket)
    );
    assert_eq!(view["partitions"].as_array().unwrap().len(), 0);
}

#[tokio::test]
async fn a_missing_database_is_a_clear_error_and_no_manifest_succeeds() {
    require_moto();
    let mut w = World::new().await;
    w.upload("m1", &["EU"], 10).await;
    w.database = "no_such_db".into();
    let spec = w.spec("missing-db", "m1", "orders", "SELECT * FROM input", "");
    let err = run(&spec).await.unwrap_err().to_string();
    assert!(
        err.contains("the Glue database `no_such_db` does not exist"),
        "{err}"
    );
    let env = Env::aws(Arc::new(MemoryMetrics::new())).await;
    let store = env.store(&spec.work).unwrap();
    assert!(
        store
            .get(&fanout::job::layout::manifest(
                &fanout::ids::JobId::parse("missing-db").unwrap()
            ))
            .await
            .is_err(),
        "no manifest is written for a job whose table could not be registered"
    );
}
