//! The fleet as clients see it: one row per session (the seed's fields), derived from the
//! stores incrementally and kept in id order.

pub(crate) mod row;
pub(crate) mod snapshot;

pub use row::{Row, SessionView};
pub use snapshot::{Fleet, List, Snapshot};
pub(crate) mod testing;
