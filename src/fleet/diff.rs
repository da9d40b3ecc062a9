//! What changed between two snapshots of the fleet, row by row: what the change stream sends
//! to clients that already hold the earlier one.

use std::collections::HashMap;
use std::sync::Arc;

use kube::runtime::reflector::ObjectRef;

use super::row::Row;
use super::snapshot::Snapshot;
use crate::k8s::crd::WhatsAppSession;

/// One row's change.
#[derive(Clone)]
pub enum RowChange {
    /// A row that is new, or whose view differs from the earlier one.
    Changed(Arc<Row>),
    /// A row that is gone (its session deleted); the earlier row says which it was.
    Removed(Arc<Row>),
}

/// The rows that differ from `before` to `after`: changed ones in the fleet's order, then the
/// removed ones in their earlier order. A row derived again with the same view (a Pod's
/// resourceVersion moved, nothing a client sees) is not a change.
pub fn diff(before: &Snapshot, after: &Snapshot) -> Vec<RowChange> {
    let mut earlier: HashMap<&ObjectRef<WhatsAppSession>, &Arc<Row>> =
        before.rows().iter().map(|r| (&r.key, r)).collect();
    let mut changes = Vec::new();
    for row in after.rows() {
        match earlier.remove(&row.key) {
            Some(old) if Arc::ptr_eq(old, row) || old.view == row.view => {}
            _ => changes.push(RowChange::Changed(row.clone())),
        }
    }
    // The leftovers, in the earlier snapshot's order so the output does not depend on hashing.
    changes.extend(
        before
            .rows()
            .iter()
            .filter(|r| earlier.contains_key(&r.key))
            .map(|r| RowChange::Removed(r.clone())),
    );
    changes
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::Fleet;
    use crate::fleet::testing::{fixture, key, running_pod, session};
    use crate::k8s::status::StoredStatus;
    use kube::runtime::watcher::Event;

    fn names(changes: &[RowChange]) -> Vec<String> {
        changes
            .iter()
            .map(|c| match c {
                RowChange::Changed(r) => format!("changed {}", r.view.session_id),
                RowChange::Removed(r) => format!("removed {}", r.view.session_id),
            })
            .collect()
    }

    #[test]
    fn new_changed_and_removed_rows_are_reported_and_nothing_else() {
        let mut f = fixture();
        let a = session("ns", "a", 1, StoredStatus::Connecting, "1");
        let b = session("ns", "b", 2, StoredStatus::Connecting, "2");
        let c = session("ns", "c", 3, StoredStatus::Connecting, "3");
        for s in [&a, &b, &c] {
            f.sessions.apply_watcher_event(&Event::Apply(s.clone()));
        }
        let fleet = Fleet::new(f.stores.clone());
        let empty = Fleet::new(crate::fleet::testing::fixture().stores).snapshot();
        let first = fleet.snapshot();
        assert_eq!(
            names(&diff(&empty, &first)),
            ["changed a", "changed b", "changed c"],
            "every row is new to a client that had none"
        );
        assert!(diff(&first, &first).is_empty());

        // b's Pod reports a connection, c is deleted, d appears.
        f.pods
            .apply_watcher_event(&Event::Apply(running_pod(&b, "Connected", "4")));
        f.stores.changed(&key(&b));
        f.sessions.apply_watcher_event(&Event::Delete(c.clone()));
        f.stores.changed(&key(&c));
        let d = session("ns", "d", 4, StoredStatus::Connecting, "5");
        f.sessions.apply_watcher_event(&Event::Apply(d.clone()));
        f.stores.changed(&key(&d));
        let second = fleet.snapshot();
        assert_eq!(
            names(&diff(&first, &second)),
            ["changed b", "changed d", "removed c"]
        );
    }

    #[test]
    fn a_row_derived_again_with_the_same_view_is_no_change() {
        let mut f = fixture();
        let a = session("ns", "a", 1, StoredStatus::Connecting, "1");
        f.sessions.apply_watcher_event(&Event::Apply(a.clone()));
        f.pods
            .apply_watcher_event(&Event::Apply(running_pod(&a, "Connected", "2")));
        let fleet = Fleet::new(f.stores.clone());
        let first = fleet.snapshot();
        // Only the Pod's resourceVersion moves (a status write that changes nothing shown).
        f.pods
            .apply_watcher_event(&Event::Apply(running_pod(&a, "Connected", "3")));
        f.stores.changed(&key(&a));
        let second = fleet.snapshot();
        assert!(!Arc::ptr_eq(&first.rows()[0], &second.rows()[0]), "derived again");
        assert!(diff(&first, &second).is_empty());
    }
}
