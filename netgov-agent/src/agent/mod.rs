//! The agent's judgement of observed flows: configuration and the pure
//! judge. The live pipeline (capture → enrich → evaluate → export) that
//! drives them comes with `netgov agent`.

pub mod config;
pub mod judge;

#[cfg(test)]
mod tests;
