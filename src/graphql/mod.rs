//! The shared GraphQL runtime: each slice's queries, mutations and subscriptions merged into
//! one schema, its limits, what every resolver may take from the context, and the document
//! analysis every transport runs requests through.

pub mod document;
pub mod limits;
pub mod parsed;
mod selection_order;
mod text_input;

use async_graphql::dataloader::{DataLoader, HashMapCache};
use async_graphql::{MergedObject, MergedSubscription, Schema};

use crate::auth::Authentication;
use crate::auth::tokens::{ApiTokenMutation, ApiTokenQuery};
use crate::events::graphql::EventQuery;
use crate::events::graphql::EventSubscription;
use crate::presence::graphql::{PresenceMutation, PresenceQuery, PresenceSubscription};
use crate::projects::graphql::{ProjectMutation, ProjectQuery};
use crate::projects::loader::MembersLoader;
use crate::state::AppState;
use crate::tasks::graphql::{TaskMutation, TaskQuery};
use crate::tasks::subscription::TaskSubscription;
use crate::users::UserLoader;
use crate::users::graphql::UserQuery;
use crate::webhooks::{WebhookMutation, WebhookQuery};

/// Every query of the API.
#[derive(MergedObject, Default)]
pub struct Query(
    UserQuery,
    ProjectQuery,
    TaskQuery,
    EventQuery,
    PresenceQuery,
    ApiTokenQuery,
    WebhookQuery,
);

/// Every mutation of the API.
#[derive(MergedObject, Default)]
pub struct Mutation(
    ProjectMutation,
    TaskMutation,
    PresenceMutation,
    ApiTokenMutation,
    WebhookMutation,
);

/// Every subscription of the API.
#[derive(MergedSubscription, Default)]
pub struct Subscription(EventSubscription, TaskSubscription, PresenceSubscription);

/// The TaskNest schema type.
pub type TaskNestSchema = Schema<Query, Mutation, Subscription>;

/// Most directives on one field (`@skip`/`@include` need one each; more is an attack).
const MAX_DIRECTIVES_PER_FIELD: usize = 10;

/// Builds the schema on `state`.
pub fn build_schema(state: AppState) -> TaskNestSchema {
    let config = state.config.clone();
    let mut builder = Schema::build(
        Query::default(),
        Mutation::default(),
        Subscription::default(),
    )
    .limit_depth(config.max_depth as usize)
    .limit_complexity(config.max_complexity as usize)
    .limit_directives(MAX_DIRECTIVES_PER_FIELD)
    .extension(limits::AliasLimit(config.max_aliases as usize))
    .extension(selection_order::SelectionOrder)
    .extension(text_input::TextInput)
    .data(state);
    if !config.introspection {
        builder = builder.disable_introspection();
    }
    builder.finish()
}

/// Adds what each request needs of its own: the viewer and fresh loaders. Loaders are per
/// request so that their caches never serve one request's reads to another.
pub fn prepare_request(
    request: async_graphql::Request,
    state: &AppState,
    authentication: Authentication,
) -> async_graphql::Request {
    request
        .data(authentication)
        .data(DataLoader::with_cache(
            UserLoader::new(state.db.clone()),
            tokio::spawn,
            HashMapCache::default(),
        ))
        .data(DataLoader::with_cache(
            MembersLoader::new(state.db.clone()),
            tokio::spawn,
            HashMapCache::default(),
        ))
}

/// The schema without any state, for printing the SDL.
pub fn sdl() -> String {
    Schema::build(
        Query::default(),
        Mutation::default(),
        Subscription::default(),
    )
    .finish()
    .sdl()
}
