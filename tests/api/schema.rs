//! The committed schema matches the code, and documents every type and field.

use serde_json::json;

use crate::helpers::*;

#[test]
fn schema_graphql_matches_the_code() {
    let committed = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/schema.graphql"))
        .expect("schema.graphql exists");
    let generated = tasknest::graphql::sdl();
    assert!(
        committed.trim() == generated.trim(),
        "schema.graphql is stale: run `cargo run -- schema > schema.graphql`"
    );
}

#[test]
fn the_schema_keeps_the_api_contract_names() {
    let sdl = without_descriptions(&tasknest::graphql::sdl());
    for needle in [
        "me: User!",
        "projects: [Project!]!",
        "project(id: ID!): Project!",
        "task(id: ID!): Task!",
        "events(projectId: ID!, after: Int = 0, limit: Int = 100): EventPage!",
        "createProject(input: CreateProjectInput!): Project!",
        "updateProject(id: ID!, input: UpdateProjectInput!): Project!",
        "deleteProject(id: ID!): Boolean!",
        "addMember(projectId: ID!, userId: ID!, role: Role!): Member!",
        "removeMember(projectId: ID!, userId: ID!): Boolean!",
        "createTask(input: CreateTaskInput!): Task!",
        "updateTask(id: ID!, patch: TaskPatch!, baseVersion: Int, clientMutationId: String): TaskUpdateResult!",
        "deleteTask(id: ID!, baseVersion: Int, clientMutationId: String): TaskDeleteResult!",
        "union TaskUpdateResult = TaskUpdated | TaskConflict",
        "union TaskDeleteResult = TaskDeleted | TaskConflict",
        "tasks(status: TaskStatus, first: Int = 50, after: String): TaskConnection!",
        "scalar DateTime",
        "scalar JSON",
    ] {
        assert!(sdl.contains(needle), "schema lacks `{needle}`");
    }
}

/// The SDL on one line without descriptions, so that signatures read as in the contract.
fn without_descriptions(sdl: &str) -> String {
    let mut out = String::new();
    let mut rest = sdl;
    while let Some(start) = rest.find("\"\"\"") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 3..];
        let end = after.find("\"\"\"").expect("closed description");
        rest = &after[end + 3..];
    }
    out.push_str(rest);
    let collapsed = out.split_whitespace().collect::<Vec<_>>().join(" ");
    collapsed
        .replace("( ", "(")
        .replace(", )", ")")
        .replace(" )", ")")
}

#[tokio::test]
async fn every_type_and_field_has_a_description() {
    let app = spawn_app().await;
    let response = app
        .gql(
            None,
            "{ __schema { types { name kind description fields { name description } inputFields { name description } enumValues { name description } } } }",
            json!({}),
        )
        .await;
    let mut missing = Vec::new();
    for ty in response["data"]["__schema"]["types"]
        .as_array()
        .expect("types")
    {
        let name = ty["name"].as_str().expect("name");
        if name.starts_with("__") || ty["kind"] == "SCALAR" {
            continue;
        }
        if ty["description"].as_str().is_none_or(str::is_empty) {
            missing.push(name.to_owned());
        }
        for list in ["fields", "inputFields", "enumValues"] {
            for field in ty[list].as_array().into_iter().flatten() {
                if field["description"].as_str().is_none_or(str::is_empty) {
                    missing.push(format!("{name}.{}", field["name"]));
                }
            }
        }
    }
    assert!(missing.is_empty(), "undocumented: {missing:?}");
}
