//! One module per subcommand: its arguments (`Args`) and its `run`.

pub mod bench_plan;
pub mod bench_reduce;
pub mod gc;
pub mod inspect;
pub mod plan;
pub mod redrive;
pub mod report;
pub mod run;
pub mod sample_data;
pub mod status;
pub mod validate;
pub mod worker;
