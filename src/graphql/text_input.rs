//! Refuses text no database here can store: PostgreSQL's `text` cannot hold U+0000, and
//! SQLite would store what PostgreSQL refuses, so the same input would answer differently
//! per backend (and, on PostgreSQL, as an internal error). Every string a request carries,
//! in its variables or written in the document, is checked before anything runs; the answer
//! is `BAD_USER_INPUT` with the offending argument's path in `extensions.field`.

use std::sync::Arc;

use async_graphql::extensions::{Extension, ExtensionContext, ExtensionFactory, NextParseQuery};
use async_graphql::parser::types::{
    DocumentOperations, ExecutableDocument, Selection, SelectionSet,
};
use async_graphql::{ServerError, ServerResult, Value as ConstValue, Variables};

use crate::error::AppError;

/// The extension.
pub struct TextInput;

impl ExtensionFactory for TextInput {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(TextInput)
    }
}

#[async_trait::async_trait]
impl Extension for TextInput {
    async fn parse_query(
        &self,
        ctx: &ExtensionContext<'_>,
        query: &str,
        variables: &Variables,
        next: NextParseQuery<'_>,
    ) -> ServerResult<ExecutableDocument> {
        for (name, value) in variables.iter() {
            if let Some(field) = nul_in_const(value, name.as_str()) {
                return Err(refused(field));
            }
        }
        let document = next.run(ctx, query, variables).await?;
        if let Some(field) = nul_in_document(&document) {
            return Err(refused(field));
        }
        Ok(document)
    }
}

fn refused(field: String) -> ServerError {
    let message = format!("{field} must not contain the NUL character (U+0000)");
    AppError::bad_input(field, message).into_server_error(&[])
}

/// The path of the first string holding U+0000 in a variable's value.
fn nul_in_const(value: &ConstValue, path: &str) -> Option<String> {
    match value {
        ConstValue::String(text) => text.contains('\0').then(|| path.to_owned()),
        ConstValue::List(items) => items
            .iter()
            .enumerate()
            .find_map(|(i, item)| nul_in_const(item, &format!("{path}.{i}"))),
        ConstValue::Object(fields) => fields
            .iter()
            .find_map(|(key, item)| nul_in_const(item, &format!("{path}.{key}"))),
        _ => None,
    }
}

fn nul_in_document(document: &ExecutableDocument) -> Option<String> {
    let operations: Vec<&SelectionSet> = match &document.operations {
        DocumentOperations::Single(op) => vec![&op.node.selection_set.node],
        DocumentOperations::Multiple(ops) => {
            ops.values().map(|op| &op.node.selection_set.node).collect()
        }
    };
    operations
        .into_iter()
        .chain(
            document
                .fragments
                .values()
                .map(|f| &f.node.selection_set.node),
        )
        .find_map(nul_in_selections)
}

fn nul_in_selections(set: &SelectionSet) -> Option<String> {
    set.items
        .iter()
        .find_map(|selection| match &selection.node {
            Selection::Field(field) => field
                .node
                .arguments
                .iter()
                .find_map(|(name, value)| {
                    let literal = value
                        .node
                        .clone()
                        .into_const_with(|_| Ok::<_, ()>(ConstValue::Null))
                        .ok()?;
                    nul_in_const(&literal, name.node.as_str())
                })
                .or_else(|| nul_in_selections(&field.node.selection_set.node)),
            Selection::InlineFragment(fragment) => {
                nul_in_selections(&fragment.node.selection_set.node)
            }
            Selection::FragmentSpread(_) => None,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_path_names_the_argument_that_holds_the_nul() {
        let document = async_graphql::parser::parse_query(
            r#"mutation { createTask(input: { projectId: "p", title: "a\u0000b" }) { id } }"#,
        )
        .expect("parses");
        assert_eq!(nul_in_document(&document).as_deref(), Some("input.title"));
        let value =
            ConstValue::from_json(serde_json::json!({ "tags": ["ok", "x\u{0}"] })).expect("json");
        assert_eq!(
            nul_in_const(&value, "input").as_deref(),
            Some("input.tags.1")
        );
    }
}
