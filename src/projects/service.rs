//! Project rules: creating, renaming, deleting, and managing members. Every change a member
//! can see is written with its event in one transaction.

use chrono::Utc;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, DatabaseConnection, EntityTrait, IntoActiveModel,
    PaginatorTrait, QueryFilter, QueryOrder, Set, TransactionTrait,
};
use serde_json::{Map, Value, json};
use uuid::Uuid;

use super::access;
use crate::auth::{ApiScope, UserDirectory, Viewer};
use crate::entities::events::EventKind;
use crate::entities::project_members::{self, Role};
use crate::entities::projects;
use crate::error::AppError;
use crate::events::log::NewEvent;
use crate::events::txn::EventLog;
use crate::validate;

/// A project as one viewer sees it.
#[derive(Debug, Clone)]
pub struct ProjectView {
    pub project: projects::Model,
    pub role: Role,
}

/// Changes to a project; `None` leaves a field alone, `Some(None)` clears the description.
#[derive(Debug, Default)]
pub struct ProjectChanges {
    pub name: Option<String>,
    pub description: Option<Option<String>>,
}

/// The viewer's live projects, oldest first.
pub async fn list(db: &DatabaseConnection, viewer: &Viewer) -> Result<Vec<ProjectView>, AppError> {
    let memberships = project_members::Entity::find()
        .filter(project_members::Column::UserId.eq(&viewer.user_id))
        .all(db)
        .await?;
    let roles: std::collections::HashMap<Uuid, Role> = memberships
        .into_iter()
        .filter(|m| viewer.reaches(m.project_id))
        .map(|m| (m.project_id, m.role))
        .collect();
    let projects = projects::Entity::find()
        .filter(projects::Column::Id.is_in(roles.keys().copied()))
        .filter(projects::Column::DeletedAt.is_null())
        .order_by_asc(projects::Column::CreatedAt)
        .order_by_asc(projects::Column::Id)
        .all(db)
        .await?;
    Ok(projects
        .into_iter()
        .filter_map(|project| {
            let role = *roles.get(&project.id)?;
            Some(ProjectView { project, role })
        })
        .collect())
}

/// One project the viewer is a member of.
pub async fn get(
    db: &DatabaseConnection,
    viewer: &Viewer,
    id: Uuid,
) -> Result<ProjectView, AppError> {
    let (project, role) = access::require(db, id, viewer, Role::Viewer).await?;
    Ok(ProjectView { project, role })
}

/// Creates a project owned by the viewer. Writes no event: nobody else can see it yet.
pub async fn create(
    db: &DatabaseConnection,
    viewer: &Viewer,
    name: &str,
    description: Option<String>,
) -> Result<ProjectView, AppError> {
    viewer.require_scope(ApiScope::Admin)?;
    if viewer
        .grant()
        .is_some_and(|grant| grant.project_ids.is_some())
    {
        return Err(AppError::Forbidden(
            "an API token limited to some projects cannot create projects",
        ));
    }
    let name = validate::title("input.name", name)?;
    let description = description
        .map(|d| validate::description("input.description", d))
        .transpose()?;
    let now = Utc::now();
    let txn = db.begin().await?;
    let project = projects::ActiveModel {
        id: Set(Uuid::new_v4()),
        name: Set(name),
        description: Set(description),
        last_seq: Set(0),
        created_by: Set(viewer.user_id.clone()),
        created_at: Set(now),
        updated_at: Set(now),
        deleted_at: Set(None),
    }
    .insert(&txn)
    .await?;
    project_members::ActiveModel {
        project_id: Set(project.id),
        user_id: Set(viewer.user_id.clone()),
        role: Set(Role::Owner),
        joined_at: Set(now),
    }
    .insert(&txn)
    .await?;
    txn.commit().await?;
    Ok(ProjectView {
        project,
        role: Role::Owner,
    })
}

/// Renames or re-describes a project (OWNER). A change to nothing writes nothing.
pub async fn update(
    log: &EventLog,
    viewer: &Viewer,
    id: Uuid,
    changes: ProjectChanges,
) -> Result<ProjectView, AppError> {
    viewer.require_scope(ApiScope::Admin)?;
    let name = changes
        .name
        .map(|n| validate::title("input.name", &n))
        .transpose()?;
    let description = changes
        .description
        .map(|d| {
            d.map(|d| validate::description("input.description", d))
                .transpose()
        })
        .transpose()?;

    let txn = log.begin().await?;
    let lock = txn
        .lock_project(id)
        .await?
        .ok_or(AppError::NotFound("project"))?;
    let role = member_role(&txn, id, viewer).await?;
    access::ensure_role(role, Role::Owner)?;

    let current = lock.project().clone();
    let mut diff = Map::new();
    let mut row = current.clone().into_active_model();
    if let Some(name) = name.filter(|n| *n != current.name) {
        diff.insert("name".into(), json!(name));
        row.name = Set(name);
    }
    if let Some(description) = description.filter(|d| *d != current.description) {
        diff.insert("description".into(), json!(description));
        row.description = Set(description);
    }
    if diff.is_empty() {
        // Nothing changes: give the reserved seq back.
        txn.rollback().await?;
        let mut project = current;
        project.last_seq -= 1;
        return Ok(ProjectView { project, role });
    }
    row.updated_at = Set(Utc::now());
    let project = row.update(&txn).await?;
    let mut event = NewEvent::new(EventKind::ProjectUpdated, viewer.actor());
    event.changes = Some(diff);
    txn.append(lock, event).await?;
    txn.commit().await?;
    Ok(ProjectView { project, role })
}

/// Deletes a project (OWNER). Its row and log stay for the realtime layer; to everyone it
/// is gone.
pub async fn delete(log: &EventLog, viewer: &Viewer, id: Uuid) -> Result<bool, AppError> {
    viewer.require_scope(ApiScope::Admin)?;
    let txn = log.begin().await?;
    let lock = txn
        .lock_project(id)
        .await?
        .ok_or(AppError::NotFound("project"))?;
    access::ensure_role(member_role(&txn, id, viewer).await?, Role::Owner)?;
    let mut row = lock.project().clone().into_active_model();
    let now = Utc::now();
    row.deleted_at = Set(Some(now));
    row.updated_at = Set(now);
    row.update(&txn).await?;
    txn.append(
        lock,
        NewEvent::new(EventKind::ProjectDeleted, viewer.actor()),
    )
    .await?;
    txn.commit().await?;
    Ok(true)
}

/// Adds a member, or changes an existing member's role (OWNER). A user id never seen
/// before gets a placeholder user row.
pub async fn add_member(
    log: &EventLog,
    users: &UserDirectory,
    viewer: &Viewer,
    project_id: Uuid,
    user_id: String,
    role: Role,
) -> Result<project_members::Model, AppError> {
    viewer.require_scope(ApiScope::Admin)?;
    let txn = log.begin().await?;
    let lock = txn
        .lock_project(project_id)
        .await?
        .ok_or(AppError::NotFound("project"))?;
    access::ensure_role(member_role(&txn, project_id, viewer).await?, Role::Owner)?;

    let existing = project_members::Entity::find_by_id((project_id, user_id.clone()))
        .one(&txn)
        .await?;
    let (member, kind) = match existing {
        Some(member) if member.role == role => {
            txn.rollback().await?;
            return Ok(member);
        }
        Some(member) => {
            if member.role == Role::Owner && owner_count(&txn, project_id).await? <= 1 {
                return Err(last_owner("role"));
            }
            let mut row = member.into_active_model();
            row.role = Set(role);
            (row.update(&txn).await?, EventKind::MemberRoleChanged)
        }
        None => {
            users.ensure_placeholder(&txn, &user_id).await?;
            let member = project_members::ActiveModel {
                project_id: Set(project_id),
                user_id: Set(user_id.clone()),
                role: Set(role),
                joined_at: Set(Utc::now()),
            }
            .insert(&txn)
            .await?;
            (member, EventKind::MemberAdded)
        }
    };
    let mut event = NewEvent::new(kind, viewer.actor());
    event.subject_user_id = Some(user_id.clone());
    event.changes = Some(member_changes(&user_id, Some(role)));
    txn.append(lock, event).await?;
    txn.commit().await?;
    Ok(member)
}

/// Removes a member (OWNER; any member may remove itself). The last OWNER stays.
pub async fn remove_member(
    log: &EventLog,
    viewer: &Viewer,
    project_id: Uuid,
    user_id: String,
) -> Result<bool, AppError> {
    viewer.require_scope(ApiScope::Admin)?;
    let txn = log.begin().await?;
    let lock = txn
        .lock_project(project_id)
        .await?
        .ok_or(AppError::NotFound("project"))?;
    let viewer_role = member_role(&txn, project_id, viewer).await?;
    if user_id != viewer.user_id {
        access::ensure_role(viewer_role, Role::Owner)?;
    }
    let member = project_members::Entity::find_by_id((project_id, user_id.clone()))
        .one(&txn)
        .await?
        .ok_or(AppError::NotFound("member"))?;
    if member.role == Role::Owner && owner_count(&txn, project_id).await? <= 1 {
        return Err(last_owner("userId"));
    }
    project_members::Entity::delete_by_id((project_id, user_id.clone()))
        .exec(&txn)
        .await?;
    let mut event = NewEvent::new(EventKind::MemberRemoved, viewer.actor());
    event.subject_user_id = Some(user_id.clone());
    event.changes = Some(member_changes(&user_id, None));
    txn.append(lock, event).await?;
    txn.commit().await?;
    Ok(true)
}

/// The viewer's role, read inside the caller's transaction; non-members get `NOT_FOUND`.
async fn member_role<C: sea_orm::ConnectionTrait>(
    txn: &C,
    project_id: Uuid,
    viewer: &Viewer,
) -> Result<Role, AppError> {
    access::viewer_role(txn, project_id, viewer)
        .await?
        .ok_or(AppError::NotFound("project"))
}

async fn owner_count<C: sea_orm::ConnectionTrait>(
    txn: &C,
    project_id: Uuid,
) -> Result<u64, AppError> {
    Ok(project_members::Entity::find()
        .filter(project_members::Column::ProjectId.eq(project_id))
        .filter(project_members::Column::Role.eq(Role::Owner))
        .count(txn)
        .await?)
}

fn last_owner(field: &str) -> AppError {
    AppError::bad_input(
        field,
        "a project needs an OWNER: make another member OWNER first",
    )
}

fn member_changes(user_id: &str, role: Option<Role>) -> Map<String, Value> {
    let mut changes = Map::new();
    changes.insert("userId".into(), json!(user_id));
    if let Some(role) = role {
        changes.insert("role".into(), json!(role));
    }
    changes
}
