//! PostgreSQL only: server-side functions that do the common task write (create, update
//! against the current version, delete) whole, in one round trip and one implicit
//! transaction: take the project's log lock, check the writer, write the task, the receipt
//! and the event with the next `seq`.
//!
//! They handle only the plain case. For anything else (a retry with a receipt, a stale
//! `baseVersion` that needs the three-way merge, a deleted task, a patch that changes
//! nothing, a failed check) they return no row and change nothing, and the server takes its
//! general path, where every rule lives in Rust. So the functions cannot disagree with the
//! server about anything but the plain case, and the test suite runs that case through them
//! on PostgreSQL and through the general path on SQLite.
//!
//! The JSON they write (event payloads, receipts) has the shapes the server's serde types
//! read: camelCase task fields, `{"Updated": {...}}` receipts.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

const UP: &str = r#"
-- A task as the server's `Task` model reads it.
CREATE OR REPLACE FUNCTION tasknest_task_json(t tasks) RETURNS jsonb
LANGUAGE sql STABLE AS $$
  SELECT jsonb_build_object(
    'id', t.id, 'projectId', t.project_id, 'title', t.title, 'description', t.description,
    'status', t.status, 'position', t.position, 'priority', t.priority, 'dueAt', t.due_at,
    'assigneeId', t.assignee_id, 'version', t.version, 'createdBy', t.created_by,
    'updatedBy', t.updated_by, 'createdAt', t.created_at, 'updatedAt', t.updated_at,
    'deletedAt', t.deleted_at)
$$;

-- The users an event names, as embedded in its payload.
CREATE OR REPLACE FUNCTION tasknest_users_json(ids text[]) RETURNS jsonb
LANGUAGE sql STABLE AS $$
  SELECT coalesce(jsonb_agg(jsonb_strip_nulls(jsonb_build_object(
           'id', u.id, 'name', u.name, 'avatarUrl', u.avatar_url)) ORDER BY u.id), '[]'::jsonb)
  FROM users u WHERE u.id = ANY(ids)
$$;

-- Locks a live project's row (the log lock) for a task write, when the plain case holds:
-- the token reaches the project (`reach` null: every project), the writer is an EDITOR or
-- OWNER, and the clientMutationId has no receipt yet. False otherwise.
CREATE OR REPLACE FUNCTION tasknest_lock_for_task_write(
  p_project uuid, p_user text, p_reach jsonb, p_cmid text) RETURNS boolean
LANGUAGE plpgsql AS $$
BEGIN
  IF p_reach IS NOT NULL AND NOT (p_reach ? p_project::text) THEN RETURN false; END IF;
  PERFORM 1 FROM projects WHERE id = p_project AND deleted_at IS NULL FOR UPDATE;
  IF NOT FOUND THEN RETURN false; END IF;
  PERFORM 1 FROM project_members
    WHERE project_id = p_project AND user_id = p_user AND role IN ('OWNER', 'EDITOR');
  IF NOT FOUND THEN RETURN false; END IF;
  IF p_cmid IS NOT NULL THEN
    PERFORM 1 FROM mutation_receipts WHERE user_id = p_user AND client_mutation_id = p_cmid;
    IF FOUND THEN RETURN false; END IF;
  END IF;
  RETURN true;
END $$;

-- Under the lock: takes the next seq, writes the receipt and the event about `t`.
CREATE OR REPLACE FUNCTION tasknest_append_task_event(
  p_project uuid, p_kind text, t tasks, p_changes jsonb, p_user text, p_via text,
  p_token_name text, p_cmid text, p_operation text, p_receipt jsonb) RETURNS SETOF events
LANGUAGE plpgsql AS $$
DECLARE
  v_seq bigint;
  v_payload jsonb;
  ev events;
BEGIN
  UPDATE projects SET last_seq = last_seq + 1 WHERE id = p_project RETURNING last_seq INTO v_seq;
  IF p_cmid IS NOT NULL THEN
    INSERT INTO mutation_receipts (user_id, client_mutation_id, operation, response, created_at)
    VALUES (p_user, p_cmid, p_operation, p_receipt::json, now())
    ON CONFLICT DO NOTHING;
  END IF;
  v_payload := jsonb_build_object(
    'task', tasknest_task_json(t),
    'users', tasknest_users_json(ARRAY[p_user, t.created_by, t.updated_by, t.assignee_id]));
  IF p_changes IS NOT NULL THEN
    v_payload := v_payload || jsonb_build_object('changes', p_changes);
  END IF;
  INSERT INTO events (project_id, seq, kind, task_id, actor_id, actor_via, actor_token_name,
                      payload, client_mutation_id, created_at)
  VALUES (p_project, v_seq, p_kind, t.id, p_user, p_via, p_token_name, v_payload::json,
          p_cmid, now())
  RETURNING * INTO ev;
  RETURN NEXT ev;
END $$;

CREATE OR REPLACE FUNCTION tasknest_create_task(
  p_project uuid, p_id uuid, p_title text, p_description text, p_status text,
  p_position double precision, p_priority integer, p_due_at timestamptz, p_assignee text,
  p_user text, p_via text, p_token_name text, p_reach jsonb, p_cmid text, p_operation text)
RETURNS SETOF events
LANGUAGE plpgsql AS $$
DECLARE
  v_position double precision := p_position;
  t tasks;
BEGIN
  IF NOT tasknest_lock_for_task_write(p_project, p_user, p_reach, p_cmid) THEN RETURN; END IF;
  IF p_assignee IS NOT NULL AND NOT EXISTS (
    SELECT 1 FROM project_members WHERE project_id = p_project AND user_id = p_assignee) THEN
    RETURN;
  END IF;
  IF v_position IS NULL THEN
    SELECT coalesce(floor(max(position)) + 1, 1) INTO v_position
    FROM tasks WHERE project_id = p_project AND deleted_at IS NULL;
  END IF;
  INSERT INTO tasks (id, project_id, title, description, status, position, priority, due_at,
                     assignee_id, version, created_by, updated_by, created_at, updated_at,
                     deleted_at)
  VALUES (p_id, p_project, p_title, p_description, p_status, v_position, p_priority, p_due_at,
          p_assignee, 1, p_user, p_user, now(), now(), NULL)
  RETURNING * INTO t;
  RETURN QUERY SELECT * FROM tasknest_append_task_event(
    p_project, 'TASK_CREATED', t, NULL, p_user, p_via, p_token_name, p_cmid, p_operation,
    tasknest_task_json(t));
END $$;

-- `p_patch` is the validated patch as the server writes it (GraphQL field names; a present
-- key sets the field, null clears it).
CREATE OR REPLACE FUNCTION tasknest_update_task(
  p_id uuid, p_patch jsonb, p_base integer, p_user text, p_via text, p_token_name text,
  p_reach jsonb, p_cmid text, p_operation text)
RETURNS SETOF events
LANGUAGE plpgsql AS $$
DECLARE
  v_project uuid;
  cur tasks;
  nxt tasks;
  v_changes jsonb := '{}'::jsonb;
BEGIN
  SELECT project_id INTO v_project FROM tasks WHERE id = p_id;
  IF NOT FOUND OR NOT tasknest_lock_for_task_write(v_project, p_user, p_reach, p_cmid) THEN
    RETURN;
  END IF;
  -- Read under the lock: this statement's snapshot sees every write committed before it.
  SELECT * INTO cur FROM tasks WHERE id = p_id;
  IF cur.deleted_at IS NOT NULL OR (p_base IS NOT NULL AND p_base <> cur.version) THEN
    RETURN;
  END IF;
  nxt := cur;
  IF p_patch ? 'title' THEN nxt.title := p_patch->>'title'; END IF;
  IF p_patch ? 'description' THEN nxt.description := p_patch->>'description'; END IF;
  IF p_patch ? 'status' THEN nxt.status := p_patch->>'status'; END IF;
  IF p_patch ? 'position' THEN nxt.position := (p_patch->>'position')::double precision; END IF;
  IF p_patch ? 'priority' THEN nxt.priority := (p_patch->>'priority')::integer; END IF;
  IF p_patch ? 'dueAt' THEN nxt.due_at := (p_patch->>'dueAt')::timestamptz; END IF;
  IF p_patch ? 'assigneeId' THEN nxt.assignee_id := p_patch->>'assigneeId'; END IF;
  IF nxt.title IS DISTINCT FROM cur.title THEN
    v_changes := v_changes || jsonb_build_object('title', p_patch->'title'); END IF;
  IF nxt.description IS DISTINCT FROM cur.description THEN
    v_changes := v_changes || jsonb_build_object('description', p_patch->'description'); END IF;
  IF nxt.status IS DISTINCT FROM cur.status THEN
    v_changes := v_changes || jsonb_build_object('status', p_patch->'status'); END IF;
  IF nxt.position IS DISTINCT FROM cur.position THEN
    v_changes := v_changes || jsonb_build_object('position', p_patch->'position'); END IF;
  IF nxt.priority IS DISTINCT FROM cur.priority THEN
    v_changes := v_changes || jsonb_build_object('priority', p_patch->'priority'); END IF;
  IF nxt.due_at IS DISTINCT FROM cur.due_at THEN
    v_changes := v_changes || jsonb_build_object('dueAt', p_patch->'dueAt'); END IF;
  IF nxt.assignee_id IS DISTINCT FROM cur.assignee_id THEN
    v_changes := v_changes || jsonb_build_object('assigneeId', p_patch->'assigneeId'); END IF;
  IF v_changes = '{}'::jsonb THEN RETURN; END IF;
  IF p_patch->>'assigneeId' IS NOT NULL AND NOT EXISTS (
    SELECT 1 FROM project_members WHERE project_id = v_project AND user_id = nxt.assignee_id) THEN
    RETURN;
  END IF;
  UPDATE tasks SET title = nxt.title, description = nxt.description, status = nxt.status,
    position = nxt.position, priority = nxt.priority, due_at = nxt.due_at,
    assignee_id = nxt.assignee_id, version = cur.version + 1, updated_by = p_user,
    updated_at = now()
  WHERE id = p_id
  RETURNING * INTO nxt;
  RETURN QUERY SELECT * FROM tasknest_append_task_event(
    v_project, 'TASK_UPDATED', nxt, v_changes, p_user, p_via, p_token_name, p_cmid, p_operation,
    jsonb_build_object('Updated', jsonb_build_object('task', tasknest_task_json(nxt),
                                                     'merged', false)));
END $$;

CREATE OR REPLACE FUNCTION tasknest_delete_task(
  p_id uuid, p_base integer, p_user text, p_via text, p_token_name text, p_reach jsonb,
  p_cmid text, p_operation text)
RETURNS SETOF events
LANGUAGE plpgsql AS $$
DECLARE
  v_project uuid;
  cur tasks;
  t tasks;
BEGIN
  SELECT project_id INTO v_project FROM tasks WHERE id = p_id;
  IF NOT FOUND OR NOT tasknest_lock_for_task_write(v_project, p_user, p_reach, p_cmid) THEN
    RETURN;
  END IF;
  SELECT * INTO cur FROM tasks WHERE id = p_id;
  IF cur.deleted_at IS NOT NULL OR (p_base IS NOT NULL AND p_base <> cur.version) THEN
    RETURN;
  END IF;
  UPDATE tasks SET version = cur.version + 1, updated_by = p_user, updated_at = now(),
    deleted_at = now()
  WHERE id = p_id
  RETURNING * INTO t;
  RETURN QUERY SELECT * FROM tasknest_append_task_event(
    v_project, 'TASK_DELETED', t, NULL, p_user, p_via, p_token_name, p_cmid, p_operation,
    jsonb_build_object('Deleted', p_id));
END $$;
"#;

const DOWN: &str = r#"
DROP FUNCTION IF EXISTS tasknest_delete_task(uuid, integer, text, text, text, jsonb, text, text);
DROP FUNCTION IF EXISTS tasknest_update_task(uuid, jsonb, integer, text, text, text, jsonb, text, text);
DROP FUNCTION IF EXISTS tasknest_create_task(uuid, uuid, text, text, text, double precision, integer, timestamptz, text, text, text, text, jsonb, text, text);
DROP FUNCTION IF EXISTS tasknest_append_task_event(uuid, text, tasks, jsonb, text, text, text, text, text, jsonb);
DROP FUNCTION IF EXISTS tasknest_lock_for_task_write(uuid, text, jsonb, text);
DROP FUNCTION IF EXISTS tasknest_users_json(text[]);
DROP FUNCTION IF EXISTS tasknest_task_json(tasks);
"#;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        crate::on_postgres(manager, UP).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        crate::on_postgres(manager, DOWN).await
    }
}
