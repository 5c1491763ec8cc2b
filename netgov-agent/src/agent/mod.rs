//! The agent's judgement of observed flows: configuration and the pure
//! judge. The live pipeline (capture → enrich → evaluate → export) that
//! drives them comes with `netgov agent`.

pub mod config;
pub mod judge;
pub mod run;

#[cfg(test)]
mod tests;
