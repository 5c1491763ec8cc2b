//! Export of judged flows: Prometheus metrics. The HTTP endpoints, flow log
//! and the pipeline that feeds them come with the agent.

pub mod metrics;
