//! The SQL's determinism: a retried chunk must write the same bytes under the same keys.
//!
//! A chunk may run more than once (a crash before its commit, a duplicate delivery), and
//! its output keys derive from its chunk id alone: the second attempt overwrites the
//! first. That is exactly-once only if both attempts write the same rows. A function whose
//! result changes from one call to the next (`random()`, `uuid()`) or from one moment to
//! the next (`now()`, `current_date`) breaks it, so the SQL may call only functions whose
//! signature DataFusion marks [`Volatility::Immutable`]. The check reads each function's
//! own declared volatility rather than a list of names kept here, so a function added to
//! DataFusion later is judged by what it declares.
//!
//! The plan checked is the one the SQL planner builds, before the optimizer runs: the
//! optimizer folds `now()` into a literal, which would hide it.

use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::logical_expr::{Expr, LogicalPlan, Volatility};

/// A function call that makes the SQL's result differ between two runs over the same rows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Nondeterministic {
    /// The function's name, as DataFusion knows it.
    pub function: String,
    /// Why: `volatile` (differs per call) or `stable` (differs between queries, such as the time).
    pub volatility: &'static str,
}

fn judged(name: &str, volatility: Volatility) -> Option<Nondeterministic> {
    let volatility = match volatility {
        Volatility::Immutable => return None,
        Volatility::Stable => "stable",
        Volatility::Volatile => "volatile",
    };
    Some(Nondeterministic {
        function: name.to_string(),
        volatility,
    })
}

fn of_expr(e: &Expr) -> Option<Nondeterministic> {
    match e {
        Expr::ScalarFunction(f) => judged(f.func.name(), f.func.signature().volatility),
        Expr::AggregateFunction(f) => judged(f.func.name(), f.func.signature().volatility),
        Expr::WindowFunction(w) => judged(w.fun.name(), w.fun.signature().volatility),
        _ => None,
    }
}

/// The first call in `plan` (subqueries included) of a function that is not immutable.
///
/// ```
/// # let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
/// # rt.block_on(async {
/// let ctx = datafusion::prelude::SessionContext::new();
/// let plan = ctx.state().create_logical_plan("SELECT random() AS r").await.unwrap();
/// let found = fanout::transform::first_nondeterministic(&plan).unwrap();
/// assert_eq!(found.function, "random");
/// let plan = ctx.state().create_logical_plan("SELECT abs(-1) AS a").await.unwrap();
/// assert!(fanout::transform::first_nondeterministic(&plan).is_none());
/// # });
/// ```
pub fn first_nondeterministic(plan: &LogicalPlan) -> Option<Nondeterministic> {
    let mut found = None;
    // The closures never fail: a visit can only stop early, when a call is found.
    let _ = plan.apply_with_subqueries(|node| {
        node.apply_expressions(|top| {
            top.apply(|e| {
                // Kept once found, whether or not every visitor honours the stop.
                if found.is_none() {
                    found = of_expr(e);
                }
                Ok(if found.is_some() {
                    TreeNodeRecursion::Stop
                } else {
                    TreeNodeRecursion::Continue
                })
            })
        })
    });
    found
}
