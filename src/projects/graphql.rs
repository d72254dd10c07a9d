//! GraphQL for projects and members: `Project`, `Member`, their queries and mutations.

use async_graphql::dataloader::{DataLoader, HashMapCache};
use async_graphql::{Context, ID, InputObject, MaybeUndefined, Object, Result};
use chrono::{DateTime, Utc};

use super::loader::MembersLoader;
use super::service::{self, ProjectChanges, ProjectView};
use crate::auth;
use crate::entities::project_members::{self, Role};
use crate::entities::tasks::TaskStatus;
use crate::error::AppError;
use crate::ids::{parse_user_id, parse_uuid};
use crate::state::AppState;
use crate::tasks::graphql::TaskConnection;
use crate::users::{User, resolve_user};

/// A task board shared by its members. Only members can see it.
pub struct Project(pub ProjectView);

/// A task board shared by its members. Only members can see it.
#[Object]
impl Project {
    /// The project's id.
    async fn id(&self) -> ID {
        self.0.project.id.into()
    }

    /// Display name, 1–200 characters.
    async fn name(&self) -> &str {
        &self.0.project.name
    }

    /// Free-text description.
    async fn description(&self) -> Option<&str> {
        self.0.project.description.as_deref()
    }

    /// When the project was created.
    async fn created_at(&self) -> DateTime<Utc> {
        self.0.project.created_at
    }

    /// When the project's name or description last changed.
    async fn updated_at(&self) -> DateTime<Utc> {
        self.0.project.updated_at
    }

    /// The seq of the project's newest event (0 if none): pass it as `after` to catch up.
    async fn last_seq(&self) -> i64 {
        self.0.project.last_seq
    }

    /// The viewer's role in this project.
    async fn viewer_role(&self) -> Role {
        self.0.role
    }

    /// Everyone in the project, in the order they joined.
    async fn members(&self, ctx: &Context<'_>) -> Result<Vec<Member>> {
        let loader = ctx.data::<DataLoader<MembersLoader, HashMapCache>>()?;
        let members = loader
            .load_one(self.0.project.id)
            .await
            .map_err(|e| AppError::Internal(anyhow::anyhow!("loading members: {e}")))?
            .unwrap_or_default();
        Ok(members.into_iter().map(Member).collect())
    }

    /// The project's tasks ordered by position, a page at a time (Relay connection).
    async fn tasks(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "Only tasks with this status.")] status: Option<TaskStatus>,
        #[graphql(desc = "Page size, 0–500 (null means 50).", default_with = "Some(50)")]
        first: Option<i32>,
        #[graphql(desc = "The `endCursor` of the previous page.")] after: Option<String>,
    ) -> Result<TaskConnection> {
        let state = AppState::from_ctx(ctx)?;
        Ok(crate::tasks::service::page(
            &state.db,
            self.0.project.id,
            status,
            first.unwrap_or(50),
            after.as_deref(),
        )
        .await?
        .into())
    }
}

/// A user's membership in a project.
pub struct Member(pub project_members::Model);

/// A user's membership in a project.
#[Object]
impl Member {
    /// The member.
    async fn user(&self, ctx: &Context<'_>) -> Result<User> {
        Ok(resolve_user(ctx, &self.0.user_id, None).await?)
    }

    /// What the member may do.
    async fn role(&self) -> Role {
        self.0.role
    }

    /// When the member joined the project.
    async fn joined_at(&self) -> DateTime<Utc> {
        self.0.joined_at
    }
}

/// A new project.
#[derive(InputObject)]
pub struct CreateProjectInput {
    /// Display name, 1–200 characters after trimming.
    pub name: String,
    /// Free-text description, up to 20,000 characters.
    pub description: Option<String>,
}

/// Changes to a project. An absent field is left alone; a null description clears it.
#[derive(InputObject)]
pub struct UpdateProjectInput {
    /// New display name, 1–200 characters after trimming.
    pub name: Option<String>,
    /// New description, up to 20,000 characters; null clears it.
    pub description: MaybeUndefined<String>,
}

/// Queries about projects.
#[derive(Default)]
pub struct ProjectQuery;

#[Object]
impl ProjectQuery {
    /// The projects the viewer is a member of, oldest first.
    async fn projects(&self, ctx: &Context<'_>) -> Result<Vec<Project>> {
        let viewer = auth::viewer(ctx)?;
        let state = AppState::from_ctx(ctx)?;
        Ok(service::list(&state.db, viewer)
            .await?
            .into_iter()
            .map(Project)
            .collect())
    }

    /// One project; `NOT_FOUND` unless the viewer is a member.
    async fn project(&self, ctx: &Context<'_>, id: ID) -> Result<Project> {
        let viewer = auth::viewer(ctx)?;
        let state = AppState::from_ctx(ctx)?;
        let id = parse_uuid("id", &id)?;
        Ok(Project(service::get(&state.db, viewer, id).await?))
    }
}

/// Mutations of projects and their members.
#[derive(Default)]
pub struct ProjectMutation;

#[Object]
impl ProjectMutation {
    /// Creates a project; the viewer becomes its OWNER.
    async fn create_project(
        &self,
        ctx: &Context<'_>,
        input: CreateProjectInput,
    ) -> Result<Project> {
        let viewer = auth::viewer(ctx)?;
        let state = AppState::from_ctx(ctx)?;
        Ok(Project(
            service::create(&state.db, viewer, &input.name, input.description).await?,
        ))
    }

    /// Renames or re-describes a project (OWNER).
    async fn update_project(
        &self,
        ctx: &Context<'_>,
        id: ID,
        input: UpdateProjectInput,
    ) -> Result<Project> {
        let viewer = auth::viewer(ctx)?;
        let state = AppState::from_ctx(ctx)?;
        let id = parse_uuid("id", &id)?;
        let changes = ProjectChanges {
            name: input.name,
            description: match input.description {
                MaybeUndefined::Undefined => None,
                MaybeUndefined::Null => Some(None),
                MaybeUndefined::Value(d) => Some(Some(d)),
            },
        };
        Ok(Project(
            service::update(&state.events, viewer, id, changes).await?,
        ))
    }

    /// Deletes a project and everything in it (OWNER).
    async fn delete_project(&self, ctx: &Context<'_>, id: ID) -> Result<bool> {
        let viewer = auth::viewer(ctx)?;
        let state = AppState::from_ctx(ctx)?;
        let id = parse_uuid("id", &id)?;
        Ok(service::delete(&state.events, viewer, id).await?)
    }

    /// Adds a user to a project, or changes the role of a member (OWNER). Works for user ids
    /// that have never signed in.
    async fn add_member(
        &self,
        ctx: &Context<'_>,
        project_id: ID,
        user_id: ID,
        role: Role,
    ) -> Result<Member> {
        let viewer = auth::viewer(ctx)?;
        let state = AppState::from_ctx(ctx)?;
        let project_id = parse_uuid("projectId", &project_id)?;
        let user_id = parse_user_id("userId", &user_id)?;
        Ok(Member(
            service::add_member(
                &state.events,
                &state.users,
                viewer,
                project_id,
                user_id,
                role,
            )
            .await?,
        ))
    }

    /// Removes a member (OWNER; members may remove themselves). The last OWNER cannot go.
    async fn remove_member(&self, ctx: &Context<'_>, project_id: ID, user_id: ID) -> Result<bool> {
        let viewer = auth::viewer(ctx)?;
        let state = AppState::from_ctx(ctx)?;
        let project_id = parse_uuid("projectId", &project_id)?;
        let user_id = parse_user_id("userId", &user_id)?;
        Ok(service::remove_member(&state.events, viewer, project_id, user_id).await?)
    }
}
