//! The fleet as clients see it: one row per session (the seed's fields), derived from the
//! stores incrementally and kept in id order, and what changed from one snapshot to the next.

pub(crate) mod diff;
pub(crate) mod row;
pub(crate) mod snapshot;

pub use diff::{RowChange, diff};
pub use row::{Row, SessionView};
pub use snapshot::{Fleet, List, Snapshot};
pub(crate) mod testing;
