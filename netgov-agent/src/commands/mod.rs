//! The commands besides the agent, each a library function over plain
//! option structs (only `cli` knows clap):
//!
//! - `check`: would these flows be allowed? (manifests or the cluster);
//! - `replay`: what recorded traffic would meet under other policies;
//! - `audit`: which rules recorded traffic used, and which it never did;
//! - `advise`: policies that would allow what was recorded;
//! - `observe`: a live agent's judged flows.
//!
//! `replay`, `audit` and `advise` read the flow log through `flowlog`.

pub mod advise;
pub mod audit;
pub mod check;
pub mod observe;
pub mod replay;
