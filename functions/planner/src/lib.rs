//! The planner Lambda: an S3 event, an EventBridge "Object Created" event, a Step
//! Functions input or a direct invocation → `plan_job` → one SQS message per chunk.

use fanout::env::Env;
use fanout::ids::JobId;
use fanout::location::Location;
use fanout::queue::Queue;
use fanout::spec::JobSpec;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Planner settings (from the environment in Lambda).
#[derive(Debug, Clone)]
pub struct Settings {
    /// The job spec of runs started by uploads.
    pub default_spec: Option<Location>,
    /// Overrides the spec's `work` (where this deployment keeps job records).
    pub work: Option<Location>,
}

/// The planner's answer (the Step Functions state for the status loop).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Planned {
    /// Job id.
    pub job_id: JobId,
    /// Work location.
    pub work: String,
    /// Chunks planned.
    pub chunks: u64,
    /// Messages sent now (chunks not committed before).
    pub sent: u64,
    /// Input objects.
    pub objects: u64,
}

/// A planner failure, typed for Lambda's `errorType`.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    /// The event is not one the planner takes.
    #[error("unsupported event: {0}")]
    Event(String),
    /// Planning failed.
    #[error(transparent)]
    Fanout(#[from] fanout::Error),
}

impl From<PlanError> for lambda_runtime::Diagnostic {
    fn from(e: PlanError) -> Self {
        let error_type = match &e {
            PlanError::Event(_) => "UnsupportedEvent".to_string(),
            PlanError::Fanout(f) => f.kind().to_string(),
        };
        lambda_runtime::Diagnostic {
            error_type,
            error_message: e.to_string(),
        }
    }
}

/// What the event asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// Plan the spec at a location.
    SpecAt(String, Option<JobId>),
    /// Plan an inline spec.
    Inline(Value, Option<JobId>),
    /// Plan the default spec over these uploaded objects (bucket, key).
    Uploaded(Vec<(String, String)>),
}

fn url_decode(key: &str) -> String {
    // S3 notifications encode keys as form data: `+` is a space.
    let plus = key.replace('+', " ");
    percent_encoding::percent_decode_str(&plus)
        .decode_utf8_lossy()
        .into_owned()
}

/// Reads the event's shape.
pub fn parse_event(event: &Value) -> Result<Request, PlanError> {
    // Checked here, where it enters: the id becomes part of every key of the job.
    let job_id = match event.get("job_id") {
        None | Some(Value::Null) => None,
        Some(Value::String(id)) => {
            Some(JobId::parse(id.as_str()).map_err(|e| PlanError::Event(format!("job_id: {e}")))?)
        }
        Some(other) => {
            return Err(PlanError::Event(format!(
                "job_id: expected a string, found {other}"
            )));
        }
    };
    if let Some(loc) = event.get("spec_location").and_then(Value::as_str) {
        return Ok(Request::SpecAt(loc.to_string(), job_id));
    }
    if let Some(spec) = event.get("spec") {
        return Ok(Request::Inline(spec.clone(), job_id));
    }
    if let Some(records) = event.get("Records").and_then(Value::as_array) {
        let objects: Vec<(String, String)> = records
            .iter()
            .filter(|r| {
                r["eventSource"] == "aws:s3"
                    && r["eventName"]
                        .as_str()
                        .is_some_and(|n| n.starts_with("ObjectCreated"))
            })
            .filter_map(|r| {
                Some((
                    r["s3"]["bucket"]["name"].as_str()?.to_string(),
                    url_decode(r["s3"]["object"]["key"].as_str()?),
                ))
            })
            .collect();
        if objects.is_empty() {
            return Err(PlanError::Event(
                "an S3 event without ObjectCreated records".into(),
            ));
        }
        return Ok(Request::Uploaded(objects));
    }
    if event["source"] == "aws.s3" && event["detail-type"] == "Object Created" {
        let bucket = event["detail"]["bucket"]["name"]
            .as_str()
            .unwrap_or_default();
        let key = event["detail"]["object"]["key"]
            .as_str()
            .unwrap_or_default();
        if bucket.is_empty() || key.is_empty() {
            return Err(PlanError::Event(
                "an EventBridge Object Created event without bucket or key".into(),
            ));
        }
        return Ok(Request::Uploaded(vec![(
            bucket.to_string(),
            key.to_string(),
        )]));
    }
    // Step Functions started by EventBridge wraps the event as its input.
    if let Some(detail) = event.get("input").filter(|v| v.is_object()) {
        return parse_event(detail);
    }
    Err(PlanError::Event("expected {\"spec_location\": …}, {\"spec\": …}, an S3 event or an EventBridge Object Created event".into()))
}

async fn read_spec(env: &Env, location: &str) -> Result<JobSpec, PlanError> {
    let loc =
        Location::parse(location).map_err(|m| PlanError::Event(format!("spec_location: {m}")))?;
    let (dir, key) = loc.split_object();
    let store = env.store(&dir)?;
    let text = store.get(&key).await.map_err(fanout::Error::from)?;
    let text = String::from_utf8(text.to_vec())
        .map_err(|_| PlanError::Event(format!("{location} is not UTF-8 text")))?;
    Ok(JobSpec::parse(location, &text).map_err(fanout::Error::from)?)
}

/// Plans the job an event asks for and sends its chunk messages.
pub async fn handle(
    env: &Env,
    queue: &dyn Queue,
    settings: &Settings,
    event: Value,
) -> Result<Planned, PlanError> {
    let (mut spec, job_id) = match parse_event(&event)? {
        Request::SpecAt(loc, id) => (read_spec(env, &loc).await?, id),
        Request::Inline(v, id) => {
            let text = serde_json::to_string(&v).map_err(|source| fanout::Error::Serialize {
                what: "inline spec",
                source,
            })?;
            (
                JobSpec::parse("inline spec", &text).map_err(fanout::Error::from)?,
                id,
            )
        }
        Request::Uploaded(objects) => {
            let loc = settings.default_spec.as_ref().ok_or_else(|| {
                PlanError::Event(
                    "an upload event needs FANOUT_SPEC (the spec of upload-started jobs)".into(),
                )
            })?;
            let mut spec = read_spec(env, &loc.to_string()).await?;
            let keys = uploaded_keys(&spec.input.location, &objects);
            if keys.is_empty() {
                return Err(PlanError::Event(format!(
                    "none of the uploaded objects lies under the spec's input {}",
                    spec.input.location
                )));
            }
            if let Some(work) = &settings.work {
                // The ledger read below is the deployment's.
                spec = spec.with_work(work.clone());
            }
            // A `_READY` marker plans its folder; objects in the ledger are left out.
            (fanout::incremental::uploaded(env, spec, &keys).await?, None)
        }
    };
    if let Some(work) = &settings.work {
        spec = spec.with_work(work.clone());
    }
    if job_id.is_some() {
        spec.job_id = job_id;
    }
    let plan = fanout::planner::plan_job(env, &spec).await?;
    let work_store = env.store(&spec.work)?;
    let sent = fanout::planner::enqueue(
        queue,
        &spec.work,
        work_store.as_ref(),
        &plan.summary.job_id,
        &plan.chunks,
    )
    .await?;
    Ok(Planned {
        job_id: plan.summary.job_id,
        work: spec.work.to_string(),
        chunks: plan.summary.chunks,
        sent,
        objects: plan.summary.objects,
    })
}

/// Keys of uploaded objects relative to the input location (others are ignored).
pub fn uploaded_keys(input: &Location, objects: &[(String, String)]) -> Vec<String> {
    let mut keys: Vec<String> = objects
        .iter()
        .filter_map(|(bucket, key)| match input {
            Location::S3 { bucket: b, prefix } if b == bucket => {
                key.strip_prefix(prefix.as_str()).map(str::to_string)
            }
            Location::Local(dir) => {
                let full = std::path::Path::new(bucket).join(key);
                full.strip_prefix(dir)
                    .ok()
                    .map(|p| p.to_string_lossy().into_owned())
            }
            _ => None,
        })
        .collect();
    keys.sort();
    keys.dedup();
    keys
}
