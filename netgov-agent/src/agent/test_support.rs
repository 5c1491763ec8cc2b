//! A judged flow for unit tests.

use crate::capture::record::FlowRecord;
use crate::judge::Judgement;
use crate::model::Identity;

/// An allowed TCP attempt 10.0.0.1:40000 → 10.0.0.2:80 between `src` and
/// `dst` ([`FlowRecord::attempt`], [`Judgement::allowed`]).
pub fn judged(src: Identity, dst: Identity) -> (FlowRecord, Judgement) {
    (
        FlowRecord::attempt("10.0.0.1", 40000, "10.0.0.2", 80),
        Judgement::allowed(src, dst),
    )
}
