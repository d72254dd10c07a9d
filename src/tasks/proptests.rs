//! Properties of the patch, merge and cursor logic over generated inputs: what the unit
//! tests show by example, checked over thousands of cases.

use std::collections::BTreeSet;

use chrono::{TimeZone, Utc};
use proptest::prelude::*;
use uuid::Uuid;

use super::cursor;
use super::merge::{changed_since, conflicting_fields};
use super::patch::{FIELDS, Patch};
use crate::entities::events;
use crate::entities::tasks::{self, TaskStatus};
use crate::validate;

fn status() -> impl Strategy<Value = TaskStatus> {
    prop_oneof![
        Just(TaskStatus::Todo),
        Just(TaskStatus::InProgress),
        Just(TaskStatus::InReview),
        Just(TaskStatus::Done),
    ]
}

fn time() -> impl Strategy<Value = chrono::DateTime<Utc>> {
    (0i64..4_000_000_000).prop_map(|s| Utc.timestamp_opt(s, 0).single().expect("in range"))
}

fn task() -> impl Strategy<Value = tasks::Model> {
    (
        "[a-z ]{1,20}",
        ".{0,30}",
        status(),
        -1e6f64..1e6,
        0i32..=4,
        proptest::option::of(time()),
        proptest::option::of("[a-z]{1,8}"),
    )
        .prop_map(
            |(title, description, status, position, priority, due_at, assignee_id)| {
                let now = Utc::now();
                tasks::Model {
                    id: Uuid::nil(),
                    project_id: Uuid::nil(),
                    title,
                    description,
                    status,
                    position,
                    priority,
                    due_at,
                    assignee_id,
                    version: 1,
                    created_by: "a".into(),
                    updated_by: "a".into(),
                    created_at: now,
                    updated_at: now,
                    deleted_at: None,
                }
            },
        )
}

fn patch() -> impl Strategy<Value = Patch> {
    (
        proptest::option::of("[a-z ]{1,20}"),
        proptest::option::of(".{0,30}"),
        proptest::option::of(status()),
        proptest::option::of(-1e6f64..1e6),
        proptest::option::of(0i32..=4),
        proptest::option::of(proptest::option::of(time())),
        proptest::option::of(proptest::option::of("[a-z]{1,8}")),
    )
        .prop_map(
            |(title, description, status, position, priority, due_at, assignee_id)| Patch {
                title,
                description,
                status,
                position,
                priority,
                due_at,
                assignee_id,
            },
        )
}

fn update_event(version: i32, fields: &BTreeSet<String>) -> events::Model {
    let fields: Vec<&str> = fields.iter().map(String::as_str).collect();
    super::merge::tests::update_event(version, &fields)
}

fn field_set() -> impl Strategy<Value = BTreeSet<String>> {
    proptest::sample::subsequence(FIELDS.to_vec(), 0..=FIELDS.len())
        .prop_map(|fields| fields.into_iter().map(str::to_owned).collect())
}

/// The patch with only `fields` kept.
fn only(patch: &Patch, fields: &BTreeSet<String>) -> Patch {
    let keep = |field: &str| fields.contains(field);
    Patch {
        title: patch.title.clone().filter(|_| keep("title")),
        description: patch.description.clone().filter(|_| keep("description")),
        status: patch.status.filter(|_| keep("status")),
        position: patch.position.filter(|_| keep("position")),
        priority: patch.priority.filter(|_| keep("priority")),
        due_at: patch.due_at.filter(|_| keep("dueAt")),
        assignee_id: patch.assignee_id.clone().filter(|_| keep("assigneeId")),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// After a patch is applied, restating it changes nothing; and it changed only the
    /// fields it names.
    #[test]
    fn applying_a_patch_makes_it_a_no_op_and_touches_nothing_else(task in task(), patch in patch()) {
        let mut after = task.clone();
        patch.apply(&mut after);
        prop_assert!(patch.changes_against(&after).is_empty());
        let named: BTreeSet<String> = patch.to_json().keys().cloned().collect();
        let changes = patch.changes_against(&task);
        prop_assert!(changes.keys().all(|k| named.contains(k)));
        if !named.contains("title") { prop_assert_eq!(&after.title, &task.title); }
        if !named.contains("description") { prop_assert_eq!(&after.description, &task.description); }
        if !named.contains("status") { prop_assert_eq!(after.status, task.status); }
        if !named.contains("priority") { prop_assert_eq!(after.priority, task.priority); }
        if !named.contains("dueAt") { prop_assert_eq!(after.due_at, task.due_at); }
        if !named.contains("assigneeId") { prop_assert_eq!(&after.assignee_id, &task.assignee_id); }
        // Applying only the reported changes gives the same task.
        let mut minimal = task.clone();
        only(&patch, &changes.keys().cloned().collect()).apply(&mut minimal);
        prop_assert_eq!(minimal, after);
    }

    /// Two edits from the same base that touch different fields merge to the same task
    /// whichever lands first: what makes accepting a stale, non-clashing patch safe.
    #[test]
    fn disjoint_patches_commute(task in task(), a in patch(), b in patch()) {
        let a_fields: BTreeSet<String> = a.changes_against(&task).keys().cloned().collect();
        let a = only(&a, &a_fields);
        // B keeps only what it changes that A does not.
        let b_fields: BTreeSet<String> = b
            .changes_against(&task)
            .keys()
            .filter(|f| !a_fields.contains(*f))
            .cloned()
            .collect();
        let b = only(&b, &b_fields);
        prop_assert!(conflicting_fields(&b_fields, Some(&a_fields)).is_empty());
        let mut first = task.clone();
        a.apply(&mut first);
        b.apply(&mut first);
        let mut second = task.clone();
        b.apply(&mut second);
        a.apply(&mut second);
        prop_assert_eq!(first, second);
    }

    /// The log's history since a base names exactly the union of the fields changed by the
    /// later versions; with any version missing the history is unknown, and then every
    /// patched field clashes.
    #[test]
    fn history_is_the_union_of_later_changes_or_unknown(
        sets in proptest::collection::vec(field_set(), 1..12),
        base_pick in any::<prop::sample::Index>(),
        drop_pick in any::<prop::sample::Index>(),
        patched in field_set(),
    ) {
        let history: Vec<events::Model> = sets
            .iter()
            .enumerate()
            .map(|(i, fields)| update_event(i as i32 + 2, fields))
            .collect();
        let current = sets.len() as i32 + 1;
        let base = 1 + base_pick.index(sets.len()) as i32;
        let expected: BTreeSet<String> = sets
            .iter()
            .enumerate()
            .filter(|(i, _)| *i as i32 + 2 > base)
            .flat_map(|(_, s)| s.iter().cloned())
            .collect();
        let changed = changed_since(&history, base, current);
        prop_assert_eq!(changed.as_ref(), Some(&expected));
        let clashes: BTreeSet<String> =
            conflicting_fields(&patched, changed.as_ref()).into_iter().collect();
        let both: BTreeSet<String> = patched.intersection(&expected).cloned().collect();
        prop_assert_eq!(clashes, both);

        if base < current {
            let missing = base + 1 + drop_pick.index((current - base) as usize) as i32;
            let pruned: Vec<events::Model> =
                history.iter().filter(|e| e.seq != i64::from(missing)).cloned().collect();
            let unknown = changed_since(&pruned, base, current);
            prop_assert_eq!(unknown.as_ref(), None);
            prop_assert_eq!(conflicting_fields(&patched, None).len(), patched.len());
        }
    }

    /// Cursors round-trip, and no string decodes to garbage or panics.
    #[test]
    fn cursors_round_trip_and_arbitrary_strings_never_panic(
        position in proptest::num::f64::NORMAL | proptest::num::f64::ZERO,
        id in any::<u128>(),
        junk in ".{0,80}",
    ) {
        let id = Uuid::from_u128(id);
        prop_assert_eq!(cursor::decode(&cursor::encode(position, id)), Some((position, id)));
        if let Some((p, _)) = cursor::decode(&junk) {
            prop_assert!(p.is_finite());
        }
    }

    /// A title is accepted exactly when it has 1–200 characters after trimming, and comes
    /// back trimmed.
    #[test]
    fn titles_are_accepted_exactly_when_they_fit(raw in "\\PC{0,260}") {
        let trimmed = raw.trim();
        let n = trimmed.chars().count();
        match validate::title("title", &raw) {
            Ok(title) => {
                prop_assert_eq!(title.as_str(), trimmed);
                prop_assert!((1..=validate::MAX_TITLE_CHARS).contains(&n));
            }
            Err(_) => prop_assert!(n == 0 || n > validate::MAX_TITLE_CHARS),
        }
    }
}
