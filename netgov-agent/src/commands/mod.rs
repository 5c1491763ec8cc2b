//! The commands besides the agent, each a library function over plain
//! option structs (`cli` parses the command line, runs them and chooses
//! exit codes; the option types here only derive clap's traits so that
//! `cli` can offer them):
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
