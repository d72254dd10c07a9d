//! Two fixes to how async-graphql reads and answers documents, in one extension so that
//! every transport gets them:
//!
//! - **Response keys in selection order.** The GraphQL spec orders a result's keys as the
//!   selection set orders its fields (fragments expanded in place). async-graphql collects
//!   the fields of a merged object one part after the other, and a `ComplexObject`'s own
//!   fields after its simple ones, so `{ projects { id } me { id } }` answered `me` first.
//!   The answer is put back in the document's order after execution (identical requests
//!   then give byte-identical bodies).
//! - **Directives on `__typename` are validated.** async-graphql's validator skips
//!   `__typename` fields entirely, so a variable used only in `t: __typename @include(if: $b)`
//!   was reported unused. Such a field is rewritten to the equivalent
//!   `... @include(if: $b) { t: __typename }`, whose directives the validator does visit.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use async_graphql::extensions::{
    Extension, ExtensionContext, ExtensionFactory, NextParseQuery, NextPrepareRequest, NextRequest,
    NextSubscribe,
};
use async_graphql::indexmap::IndexMap;
use async_graphql::parser::types::{
    DocumentOperations, ExecutableDocument, FragmentDefinition, InlineFragment, Selection,
    SelectionSet,
};
use async_graphql::{Name, Positioned, Request, Response, ServerResult, Value, Variables};
use futures_util::StreamExt;
use futures_util::stream::BoxStream;

/// The extension (one instance per request).
pub struct SelectionOrder;

impl ExtensionFactory for SelectionOrder {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(PerRequest::default())
    }
}

#[derive(Default)]
struct PerRequest(Arc<Mutex<Parsed>>);

/// What one request's answers are ordered by.
#[derive(Default)]
struct Parsed {
    operation_name: Option<String>,
    document: Option<Arc<ExecutableDocument>>,
}

impl PerRequest {
    fn parsed(&self) -> std::sync::MutexGuard<'_, Parsed> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[async_trait::async_trait]
impl Extension for PerRequest {
    async fn request(&self, ctx: &ExtensionContext<'_>, next: NextRequest<'_>) -> Response {
        let mut response = next.run(ctx).await;
        order(&self.0, &mut response);
        response
    }

    fn subscribe<'s>(
        &self,
        ctx: &ExtensionContext<'_>,
        stream: BoxStream<'s, Response>,
        next: NextSubscribe<'_>,
    ) -> BoxStream<'s, Response> {
        let parsed = self.0.clone();
        next.run(ctx, stream)
            .map(move |mut response| {
                order(&parsed, &mut response);
                response
            })
            .boxed()
    }

    async fn prepare_request(
        &self,
        ctx: &ExtensionContext<'_>,
        request: Request,
        next: NextPrepareRequest<'_>,
    ) -> ServerResult<Request> {
        self.parsed().operation_name = request.operation_name.clone();
        next.run(ctx, request).await
    }

    async fn parse_query(
        &self,
        ctx: &ExtensionContext<'_>,
        query: &str,
        variables: &Variables,
        next: NextParseQuery<'_>,
    ) -> ServerResult<ExecutableDocument> {
        let mut document = next.run(ctx, query, variables).await?;
        lift_typename_directives(&mut document);
        self.parsed().document = Some(Arc::new(document.clone()));
        Ok(document)
    }
}

fn order(parsed: &Mutex<Parsed>, response: &mut Response) {
    if !matches!(response.data, Value::Object(_)) {
        return;
    }
    let (document, name) = {
        let parsed = parsed.lock().unwrap_or_else(|e| e.into_inner());
        match &parsed.document {
            Some(document) => (document.clone(), parsed.operation_name.clone()),
            None => return,
        }
    };
    let Some((_, operation)) = super::document::selected_operation(&document, name.as_deref())
    else {
        return;
    };
    reorder(
        &mut response.data,
        &[&operation.node.selection_set.node],
        &document,
    );
}

/// Puts `value`'s keys in the order the selection sets (merged, fragments in place) give.
fn reorder(value: &mut Value, sets: &[&SelectionSet], document: &ExecutableDocument) {
    match value {
        Value::List(items) => {
            for item in items {
                reorder(item, sets, document);
            }
        }
        Value::Object(map) => {
            let mut keys: IndexMap<&str, Vec<&SelectionSet>> = IndexMap::new();
            let mut expanded = HashSet::new();
            for set in sets {
                collect(set, document, &mut keys, &mut expanded);
            }
            let mut ordered = IndexMap::with_capacity(map.len());
            for (key, children) in &keys {
                if let Some((name, mut child)) = map.shift_remove_entry(*key) {
                    if !children.is_empty() {
                        reorder(&mut child, children, document);
                    }
                    ordered.insert(name, child);
                }
            }
            // Nothing should be left, but never drop a key.
            ordered.extend(std::mem::take(map));
            *map = ordered;
        }
        _ => {}
    }
}

/// The response keys a selection set produces, in order, each with the sub-selections of
/// the fields that produce it. Each fragment is expanded once per level: a repeated spread
/// adds no key, and a fragment bomb costs no more than the document's size.
fn collect<'a>(
    set: &'a SelectionSet,
    document: &'a ExecutableDocument,
    keys: &mut IndexMap<&'a str, Vec<&'a SelectionSet>>,
    expanded: &mut HashSet<&'a Name>,
) {
    for selection in &set.items {
        match &selection.node {
            Selection::Field(field) => {
                let field = &field.node;
                let children = keys.entry(field.response_key().node.as_str()).or_default();
                if !field.selection_set.node.items.is_empty() {
                    children.push(&field.selection_set.node);
                }
            }
            Selection::InlineFragment(fragment) => {
                collect(&fragment.node.selection_set.node, document, keys, expanded);
            }
            Selection::FragmentSpread(spread) => {
                let name = &spread.node.fragment_name.node;
                let fragment: Option<&Positioned<FragmentDefinition>> =
                    document.fragments.get(name);
                if let Some(fragment) = fragment
                    && expanded.insert(name)
                {
                    collect(&fragment.node.selection_set.node, document, keys, expanded);
                }
            }
        }
    }
}

/// Rewrites `__typename @d` to `... @d { __typename }` everywhere in the document.
fn lift_typename_directives(document: &mut ExecutableDocument) {
    match &mut document.operations {
        DocumentOperations::Single(operation) => lift(&mut operation.node.selection_set.node),
        DocumentOperations::Multiple(operations) => {
            for operation in operations.values_mut() {
                lift(&mut operation.node.selection_set.node);
            }
        }
    }
    for fragment in document.fragments.values_mut() {
        lift(&mut fragment.node.selection_set.node);
    }
}

fn lift(set: &mut SelectionSet) {
    for selection in &mut set.items {
        let pos = selection.pos;
        match &mut selection.node {
            Selection::Field(field)
                if field.node.name.node == "__typename" && !field.node.directives.is_empty() =>
            {
                let directives = std::mem::take(&mut field.node.directives);
                let field = Selection::Field(field.clone());
                selection.node = Selection::InlineFragment(Positioned::new(
                    InlineFragment {
                        type_condition: None,
                        directives,
                        selection_set: Positioned::new(
                            SelectionSet {
                                items: vec![Positioned::new(field, pos)],
                            },
                            pos,
                        ),
                    },
                    pos,
                ));
            }
            Selection::Field(field) => lift(&mut field.node.selection_set.node),
            Selection::InlineFragment(fragment) => lift(&mut fragment.node.selection_set.node),
            Selection::FragmentSpread(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ordered(query: &str, data: serde_json::Value) -> String {
        let document = async_graphql::parser::parse_query(query).expect("parses");
        let mut value = Value::from_json(data).expect("json");
        let Some((_, operation)) = super::super::document::selected_operation(&document, None)
        else {
            panic!("one operation");
        };
        reorder(&mut value, &[&operation.node.selection_set.node], &document);
        serde_json::to_string(&value).expect("json")
    }

    #[test]
    fn keys_follow_the_selection_set_with_fragments_in_place() {
        let query = "{ b { y x } ...F a: c { ... on T { q p } } } fragment F on Query { d }";
        let data = serde_json::json!({
            "a": [{ "p": 1, "q": 2 }],
            "d": 0,
            "b": { "x": 1, "y": 2 },
        });
        assert_eq!(
            ordered(query, data),
            r#"{"b":{"y":2,"x":1},"d":0,"a":[{"q":2,"p":1}]}"#
        );
    }

    #[test]
    fn typename_directives_move_to_an_inline_fragment() {
        let mut document =
            async_graphql::parser::parse_query("{ me { id } t: __typename @include(if: $b) }")
                .expect("parses");
        lift_typename_directives(&mut document);
        let Some((_, operation)) = super::super::document::selected_operation(&document, None)
        else {
            panic!("one operation");
        };
        let items = &operation.node.selection_set.node.items;
        assert!(
            matches!(&items[1].node, Selection::InlineFragment(f) if f.node.directives.len() == 1)
        );
    }
}
