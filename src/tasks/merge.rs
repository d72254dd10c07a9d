//! Three-way merge of a stale patch. The client edited version `base`; the task is now at a
//! later version. The event log says which fields changed since `base`. The patch applies
//! when it touches none of them; otherwise the clashing fields are a conflict.

use std::collections::BTreeSet;

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::entities::events::{self, EventKind};

use super::patch::FIELDS;

/// The fields changed by the versions after `base` up to `current`, read from the task's
/// events. `None` when the log no longer holds every one of those versions (pruned), in
/// which case the caller must assume everything changed.
pub fn changed_since(
    history: &[events::Model],
    base: i32,
    current: i32,
) -> Option<BTreeSet<String>> {
    let mut changed = BTreeSet::new();
    let mut seen_versions = BTreeSet::new();
    for event in history {
        let Ok(entry) = HistoryEntry::deserialize(&event.payload) else {
            return None;
        };
        let Some(version) = entry.task.map(|t| t.version) else {
            continue;
        };
        if version <= base || version > current {
            continue;
        }
        seen_versions.insert(version);
        match event.kind {
            EventKind::TaskUpdated => {
                changed.extend(
                    entry
                        .changes
                        .unwrap_or_default()
                        .into_iter()
                        .map(|(k, _)| k),
                );
            }
            // A version made by anything else (a re-creation, say) may have touched it all.
            _ => changed.extend(FIELDS.iter().map(|f| (*f).to_owned())),
        }
    }
    let complete = (base + 1..=current).all(|v| seen_versions.contains(&v));
    complete.then_some(changed)
}

/// The part of an event payload the merge reads.
#[derive(Deserialize)]
struct HistoryEntry {
    changes: Option<Map<String, Value>>,
    task: Option<VersionOnly>,
}

#[derive(Deserialize)]
struct VersionOnly {
    version: i32,
}

/// The patched fields that clash: those the patch would change that also changed since
/// `base` (or all of them when that is unknown).
pub fn conflicting_fields<'a>(
    patched: impl IntoIterator<Item = &'a String>,
    changed: Option<&BTreeSet<String>>,
) -> Vec<String> {
    patched
        .into_iter()
        .filter(|field| changed.is_none_or(|c| c.contains(*field)))
        .cloned()
        .collect()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use chrono::Utc;
    use serde_json::json;
    use uuid::Uuid;

    pub(crate) fn update_event(version: i32, fields: &[&str]) -> events::Model {
        let changes: serde_json::Map<_, _> =
            fields.iter().map(|f| ((*f).to_owned(), json!(1))).collect();
        events::Model {
            id: version.into(),
            project_id: Uuid::nil(),
            seq: version.into(),
            kind: EventKind::TaskUpdated,
            task_id: Some(Uuid::nil()),
            actor_id: "a".into(),
            payload: json!({"changes": changes, "task": {"version": version}}),
            actor_via: Default::default(),
            actor_token_name: None,
            client_mutation_id: None,
            created_at: Utc::now(),
        }
    }

    #[test]
    fn changed_fields_after_the_base_are_collected() {
        let history = vec![
            update_event(2, &["title"]),
            update_event(3, &["status"]),
            update_event(4, &["priority"]),
        ];
        let changed = changed_since(&history, 2, 4).unwrap();
        assert_eq!(
            changed.into_iter().collect::<Vec<_>>(),
            vec!["priority", "status"]
        );
    }

    #[test]
    fn a_pruned_version_makes_the_history_unknown() {
        let history = vec![update_event(3, &["status"]), update_event(4, &["priority"])];
        assert_eq!(changed_since(&history, 1, 4), None);
    }

    #[test]
    fn unknown_history_makes_every_patched_field_conflict() {
        let patched = ["title".to_owned(), "status".to_owned()];
        assert_eq!(conflicting_fields(&patched, None), patched.to_vec());
        let changed: BTreeSet<String> = ["status".to_owned()].into();
        assert_eq!(conflicting_fields(&patched, Some(&changed)), vec!["status"]);
    }
}
