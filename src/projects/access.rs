//! Membership checks. A non-member learns nothing: it gets `NOT_FOUND`, exactly as for an id
//! that does not exist; a member without the needed role gets `FORBIDDEN`. An API token
//! limited to some projects is a non-member of every other.

use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter};
use uuid::Uuid;

use crate::auth::Viewer;
use crate::entities::project_members::{self, Role};
use crate::entities::projects;
use crate::error::AppError;

/// The viewer's role in a project, if it is a member and its token reaches the project.
pub async fn viewer_role<C: ConnectionTrait>(
    db: &C,
    project_id: Uuid,
    viewer: &Viewer,
) -> Result<Option<Role>, AppError> {
    if !viewer.reaches(project_id) {
        return Ok(None);
    }
    role_of(db, project_id, &viewer.user_id).await
}

/// A user's role in a project, if it is a member.
pub async fn role_of<C: ConnectionTrait>(
    db: &C,
    project_id: Uuid,
    user_id: &str,
) -> Result<Option<Role>, AppError> {
    Ok(
        project_members::Entity::find_by_id((project_id, user_id.to_owned()))
            .one(db)
            .await?
            .map(|m| m.role),
    )
}

/// Checks that `role` allows `min`.
pub fn ensure_role(role: Role, min: Role) -> Result<(), AppError> {
    if role.at_least(min) {
        Ok(())
    } else {
        Err(AppError::Forbidden(match min {
            Role::Owner => "only an OWNER of the project may do this",
            Role::Editor => "only an EDITOR or OWNER of the project may do this",
            Role::Viewer => "only members of the project may do this",
        }))
    }
}

/// The project and the viewer's role, when the project is live and the viewer is a member
/// with at least `min`.
pub async fn require<C: ConnectionTrait>(
    db: &C,
    project_id: Uuid,
    viewer: &Viewer,
    min: Role,
) -> Result<(projects::Model, Role), AppError> {
    if !viewer.reaches(project_id) {
        return Err(AppError::NotFound("project"));
    }
    let project = projects::Entity::find_by_id(project_id)
        .filter(projects::Column::DeletedAt.is_null())
        .one(db)
        .await?
        .ok_or(AppError::NotFound("project"))?;
    let role = role_of(db, project_id, &viewer.user_id)
        .await?
        .ok_or(AppError::NotFound("project"))?;
    ensure_role(role, min)?;
    Ok((project, role))
}
