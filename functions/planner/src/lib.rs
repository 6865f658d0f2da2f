//! The planner Lambda: an S3 event, an EventBridge "Object Created" event, a Step
//! Functions input or a direct invocation → `plan_job` → one SQS message per chunk; or
//! `{"drain": "arrivals"}` (the schedule of the event-driven mode) →
//! [`fanout::arrivals::drain_arrivals`] → one job of the objects that arrived, or none.

use std::sync::Arc;

use fanout::arrivals::{DrainCounts, DrainLimits, Drained};
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
    /// The arrivals queue of the event-driven mode, when deployed.
    pub arrivals: Option<Arrivals>,
}

/// The event-driven mode's queue and batch bounds.
#[derive(Debug, Clone)]
pub struct Arrivals {
    /// The arrivals queue (S3 "Object Created" events through EventBridge).
    pub queue: Arc<dyn Queue>,
    /// How much one drain takes into its job.
    pub limits: DrainLimits,
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
    /// What the drain saw, for a job drained from the arrivals queue.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drain: Option<DrainCounts>,
}

/// The answer when nothing was planned (no new object arrived): the state machine ends
/// the execution there, without a job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NothingPlanned {
    /// Always `true`: the field the state machine's `Planned?` choice looks for.
    pub nothing_planned: bool,
    /// Why, in words.
    pub reason: String,
    /// What the drain saw.
    pub drain: DrainCounts,
}

/// The planner's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Answer {
    /// A job was planned.
    Planned(Planned),
    /// No job: nothing new.
    Nothing(NothingPlanned),
}

impl Answer {
    /// The planned job, or why there is none.
    pub fn into_planned(self) -> Result<Planned, NothingPlanned> {
        match self {
            Answer::Planned(p) => Ok(p),
            Answer::Nothing(n) => Err(n),
        }
    }
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
    /// Drain the arrivals queue into one job of the default spec (or the one at the
    /// location given); the drain id (the schedule's time) makes a retry answer the same job.
    DrainArrivals {
        /// The drain's id.
        drain_id: Option<String>,
        /// A spec other than the default.
        spec_location: Option<String>,
    },
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
    if event.get("drain").is_some() {
        if event["drain"] != "arrivals" {
            return Err(PlanError::Event(format!(
                "drain: expected \"arrivals\", found {}",
                event["drain"]
            )));
        }
        let text = |field: &str| event.get(field).and_then(Value::as_str).map(str::to_string);
        return Ok(Request::DrainArrivals {
            drain_id: text("drain_id"),
            spec_location: text("spec_location"),
        });
    }
    if let Some(loc) = event.get("spec_location").and_then(Value::as_str) {
        return Ok(Request::SpecAt(loc.to_string(), job_id));
    }
    if let Some(spec) = event.get("spec") {
        return Ok(Request::Inline(spec.clone(), job_id));
    }
    if let Some(created) = fanout::arrivals::object_created(event) {
        if created.is_empty() {
            return Err(PlanError::Event(
                "an S3 event without ObjectCreated records".into(),
            ));
        }
        return Ok(Request::Uploaded(
            created.into_iter().map(|o| (o.bucket, o.key)).collect(),
        ));
    }
    if event["source"] == "aws.s3" && event["detail-type"] == "Object Created" {
        return Err(PlanError::Event(
            "an EventBridge Object Created event without bucket or key".into(),
        ));
    }
    // Step Functions started by EventBridge wraps the event as its input.
    if let Some(detail) = event.get("input").filter(|v| v.is_object()) {
        return parse_event(detail);
    }
    Err(PlanError::Event("expected {\"spec_location\": …}, {\"spec\": …}, {\"drain\": \"arrivals\"}, an S3 event or an EventBridge Object Created event".into()))
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

/// Plans the job an event asks for and sends its chunk messages; a drain of the arrivals
/// queue may find nothing new and plan nothing.
pub async fn handle(
    env: &Env,
    queue: &dyn Queue,
    settings: &Settings,
    event: Value,
) -> Result<Answer, PlanError> {
    let (mut spec, job_id) = match parse_event(&event)? {
        Request::DrainArrivals {
            drain_id,
            spec_location,
        } => return drain(env, queue, settings, drain_id, spec_location).await,
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
            let mut spec = default_spec(env, settings, "an upload event").await?;
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
    Ok(Answer::Planned(Planned {
        job_id: plan.summary.job_id,
        work: spec.work.to_string(),
        chunks: plan.summary.chunks,
        sent,
        objects: plan.summary.objects,
        drain: None,
    }))
}

async fn default_spec(env: &Env, settings: &Settings, what: &str) -> Result<JobSpec, PlanError> {
    let loc = settings.default_spec.as_ref().ok_or_else(|| {
        PlanError::Event(format!(
            "{what} needs FANOUT_SPEC (the spec of event-started jobs)"
        ))
    })?;
    read_spec(env, &loc.to_string()).await
}

/// The arrivals drain: one job of the objects that arrived since the last drain.
async fn drain(
    env: &Env,
    queue: &dyn Queue,
    settings: &Settings,
    drain_id: Option<String>,
    spec_location: Option<String>,
) -> Result<Answer, PlanError> {
    let arrivals = settings.arrivals.as_ref().ok_or_else(|| {
        PlanError::Event(
            "a drain of the arrivals queue needs FANOUT_ARRIVALS_QUEUE_URL (deploy with EventMode=true)"
                .into(),
        )
    })?;
    let mut spec = match spec_location {
        Some(loc) => read_spec(env, &loc).await?,
        None => default_spec(env, settings, "a drain of the arrivals queue").await?,
    };
    if let Some(work) = &settings.work {
        spec = spec.with_work(work.clone());
    }
    let drained = fanout::arrivals::drain_arrivals(
        env,
        arrivals.queue.as_ref(),
        queue,
        &spec,
        arrivals.limits,
        drain_id.as_deref(),
    )
    .await?;
    Ok(match drained {
        Drained::Planned { job, sent, counts } => Answer::Planned(Planned {
            job_id: job.summary.job_id,
            work: spec.work.to_string(),
            chunks: job.summary.chunks,
            sent,
            objects: job.summary.objects,
            drain: Some(counts),
        }),
        Drained::Nothing { reason, counts } => Answer::Nothing(NothingPlanned {
            nothing_planned: true,
            reason,
            drain: counts,
        }),
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
