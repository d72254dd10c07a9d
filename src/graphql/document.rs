//! What the transports need to know about a request before running it, from one parse that
//! stays in the request (execution does not parse again): the operation's type and name,
//! a required variable that is missing, and whether it is a live `projectEvents` subscription
//! that may share an execution with identical ones. HTTP, graphql-ws and grouping all read
//! it here, so they pick the same operation by the same rules.

use async_graphql::parser::types::{
    DocumentOperations, ExecutableDocument, OperationDefinition, OperationType, Selection,
};
use async_graphql::{Name, Positioned, Request, ServerError, Value};
use uuid::Uuid;

/// The operation a request runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Analysis {
    /// Query, mutation or subscription.
    pub kind: OperationType,
    /// The operation's name, given or read from the document.
    pub name: Option<String>,
    /// The project of a `projectEvents` subscription without `after` (live from now), the
    /// only selection of its operation, with no directives: such subscriptions may share one
    /// execution.
    pub live_project: Option<Uuid>,
}

/// Analyzes the request's document; `None` when it does not parse or names no runnable
/// operation (execution then reports the error itself).
pub fn analyze(request: &mut Request) -> Option<Analysis> {
    let given = request.operation_name.clone();
    let variables = request.variables.clone();
    let document = request.parsed_query().ok()?;
    let (name, operation) = selected_operation(document, given.as_deref())?;
    let operation = &operation.node;
    Some(Analysis {
        kind: operation.ty,
        name: name.or(given),
        live_project: live_project(operation, &variables),
    })
}

/// The operation a document runs under `name`, with its name when the document names it.
pub(crate) fn selected_operation<'a>(
    document: &'a ExecutableDocument,
    name: Option<&str>,
) -> Option<(Option<String>, &'a Positioned<OperationDefinition>)> {
    match (&document.operations, name) {
        (DocumentOperations::Single(op), _) => Some((None, op)),
        (DocumentOperations::Multiple(ops), Some(name)) => ops
            .get(&Name::new(name))
            .map(|op| (Some(name.to_owned()), op)),
        (DocumentOperations::Multiple(ops), None) if ops.len() == 1 => ops
            .iter()
            .next()
            .map(|(name, op)| (Some(name.to_string()), op)),
        (DocumentOperations::Multiple(_), None) => None,
    }
}

fn live_project(
    operation: &OperationDefinition,
    variables: &async_graphql::Variables,
) -> Option<Uuid> {
    if operation.ty != OperationType::Subscription || !operation.directives.is_empty() {
        return None;
    }
    let [selection] = operation.selection_set.node.items.as_slice() else {
        return None;
    };
    let Selection::Field(field) = &selection.node else {
        return None;
    };
    let field = &field.node;
    if field.name.node.as_str() != "projectEvents" || !field.directives.is_empty() {
        return None;
    }
    let mut project_id = None;
    for (name, value) in &field.arguments {
        let value = value
            .node
            .clone()
            .into_const_with(|var| Ok::<_, ()>(variables.get(&var).cloned().unwrap_or(Value::Null)))
            .ok()?;
        match (name.node.as_str(), value) {
            ("projectId", Value::String(id)) => project_id = Some(Uuid::parse_str(&id).ok()?),
            ("after", Value::Null) => {}
            _ => return None,
        }
    }
    project_id
}

/// A required variable (non-null, no default) the request does not provide. async-graphql
/// notices it only while resolving a field, which would make a request error look like a
/// field error (a 200); the GraphQL-over-HTTP specification makes it a request error.
pub fn missing_variable(request: &mut Request) -> Option<ServerError> {
    let given = request.operation_name.clone();
    let provided: std::collections::HashSet<String> =
        request.variables.keys().map(ToString::to_string).collect();
    let document = request.parsed_query().ok()?;
    let (_, operation) = selected_operation(document, given.as_deref())?;
    operation.node.variable_definitions.iter().find_map(|def| {
        let var = &def.node;
        let required = !var.var_type.node.nullable && var.default_value.is_none();
        (required && !provided.contains(var.name.node.as_str())).then(|| {
            ServerError::new(
                format!(
                    "Variable \"${}\" of required type \"{}\" was not provided.",
                    var.name.node, var.var_type.node
                ),
                Some(def.pos),
            )
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn analyzed(query: &str, name: Option<&str>, variables: serde_json::Value) -> Option<Analysis> {
        let mut request =
            Request::new(query).variables(async_graphql::Variables::from_json(variables));
        if let Some(name) = name {
            request = request.operation_name(name);
        }
        analyze(&mut request)
    }

    const PROJECT: &str = "6f1c2a57-0d7e-4a57-9a53-3f3c1c1b2d4e";

    #[test]
    fn a_live_project_events_subscription_may_share_an_execution() {
        let live = analyzed(
            "subscription S($p: ID!) { projectEvents(projectId: $p) { seq } }",
            None,
            serde_json::json!({ "p": PROJECT }),
        )
        .expect("parses");
        assert_eq!(live.kind, OperationType::Subscription);
        assert_eq!(live.name.as_deref(), Some("S"));
        assert_eq!(live.live_project, Uuid::parse_str(PROJECT).ok());
    }

    #[test]
    fn replays_directives_and_other_selections_run_alone() {
        for query in [
            "subscription($p: ID!) { projectEvents(projectId: $p, after: 3) { seq } }",
            "subscription($p: ID!) { projectEvents(projectId: $p) @skip(if: false) { seq } }",
            "subscription($p: ID!) { presenceEvents(projectId: $p) { kind } }",
        ] {
            let analysis = analyzed(query, None, serde_json::json!({ "p": PROJECT }));
            assert_eq!(analysis.and_then(|a| a.live_project), None, "{query}");
        }
    }

    #[test]
    fn the_only_operation_of_a_document_is_picked_without_a_name() {
        let picked = analyzed("query A { me { id } }", None, serde_json::json!({}));
        assert_eq!(picked.and_then(|a| a.name).as_deref(), Some("A"));
        let ambiguous = analyzed(
            "query A { me { id } } query B { me { id } }",
            None,
            serde_json::json!({}),
        );
        assert_eq!(ambiguous, None);
        let named = analyzed(
            "query A { me { id } } mutation B { deleteProject(id: \"x\") }",
            Some("B"),
            serde_json::json!({}),
        );
        assert_eq!(named.map(|a| a.kind), Some(OperationType::Mutation));
    }
}
