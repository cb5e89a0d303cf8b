-- The SQL API: one function per REST endpoint of the product. Every function
-- takes team_id first and never reads or changes another team's rows: another
-- team's monitor is reported exactly like a missing one (SQLSTATE P0002).
--
-- Field validation lives in _normalize_monitor_spec (Rust); these functions
-- only apply it and write the rows, so an error leaves nothing half-written.

CREATE FUNCTION _check_team(team_id bigint) RETURNS void
LANGUAGE plpgsql STABLE
SET search_path = synthetic_monitoring, pg_catalog, pg_temp
AS $$
BEGIN
    IF team_id IS NULL OR team_id <= 0 THEN
        RAISE EXCEPTION 'invalid team_id: %', coalesce(team_id::text, 'null')
            USING ERRCODE = '22023', HINT = 'team_id is the positive integer id of the team (tenant)';
    END IF;
END $$;

CREATE FUNCTION _check_acting_user(acting_user text) RETURNS void
LANGUAGE plpgsql STABLE
SET search_path = synthetic_monitoring, pg_catalog, pg_temp
AS $$
BEGIN
    IF acting_user IS NOT NULL AND char_length(acting_user) NOT BETWEEN 1 AND 200 THEN
        RAISE EXCEPTION 'invalid acting_user: must be 1 to 200 characters'
            USING ERRCODE = '22023', HINT = 'pass the id of the user acting, or NULL';
    END IF;
END $$;

CREATE FUNCTION _monitor_not_found(team_id bigint, id uuid) RETURNS void
LANGUAGE plpgsql STABLE
SET search_path = synthetic_monitoring, pg_catalog, pg_temp
AS $$
BEGIN
    RAISE EXCEPTION 'monitor % not found', coalesce(id::text, 'null')
        USING ERRCODE = 'P0002', HINT = format('no monitor with this id exists in team %s', team_id);
END $$;

-- A locked monitor of the team, or P0002.
CREATE FUNCTION _lock_monitor(team_id bigint, id uuid) RETURNS monitors
LANGUAGE plpgsql
SET search_path = synthetic_monitoring, pg_catalog, pg_temp
AS $$
DECLARE
    target monitors;
BEGIN
    PERFORM _check_team(team_id);
    SELECT m.* INTO target FROM monitors m WHERE m.team_id = _lock_monitor.team_id AND m.id = _lock_monitor.id FOR UPDATE;
    IF NOT FOUND THEN
        PERFORM _monitor_not_found(team_id, id);
    END IF;
    RETURN target;
END $$;

-- User action tracking: an event row per change made on behalf of a user.
CREATE FUNCTION _track_user_action(event text, acting_user text, monitor monitors, extra jsonb DEFAULT '{}')
RETURNS void
LANGUAGE sql
SET search_path = synthetic_monitoring, pg_catalog, pg_temp
AS $$
    INSERT INTO events (event, distinct_id, team_id, properties)
    SELECT event, acting_user, monitor.team_id,
           jsonb_build_object(
               'monitor_id', monitor.id,
               'monitor_name', monitor.name,
               'monitor_type', monitor.monitor_type,
               'url', _redact_url(monitor.url)
           ) || extra
    WHERE acting_user IS NOT NULL
$$;

CREATE FUNCTION create_monitor(team_id bigint, spec jsonb, acting_user text DEFAULT NULL)
RETURNS monitors
LANGUAGE plpgsql
SET search_path = synthetic_monitoring, pg_catalog, pg_temp
AS $$
DECLARE
    normalized jsonb;
    created monitors;
BEGIN
    PERFORM _check_team(team_id);
    PERFORM _check_acting_user(acting_user);
    normalized := _normalize_monitor_spec(NULL, spec::text);
    INSERT INTO monitors
    SELECT (jsonb_populate_record(NULL::monitors, normalized || jsonb_build_object(
        'id', gen_random_uuid(),
        'team_id', team_id,
        'state', CASE WHEN (normalized->>'enabled')::boolean THEN 'pending' ELSE 'disabled' END,
        'consecutive_failures', 0,
        'alerting', false,
        'next_check_at', CASE WHEN (normalized->>'enabled')::boolean THEN now() END,
        'created_by', acting_user,
        'created_at', now(),
        'updated_at', now()
    ))).*
    RETURNING * INTO created;
    PERFORM _track_user_action('synthetic monitor created', acting_user, created);
    IF created.enabled THEN
        PERFORM _wake_worker_at_commit();
    END IF;
    RETURN created;
END $$;

CREATE FUNCTION update_monitor(team_id bigint, id uuid, patch jsonb, acting_user text DEFAULT NULL)
RETURNS monitors
LANGUAGE plpgsql
SET search_path = synthetic_monitoring, pg_catalog, pg_temp
AS $$
DECLARE
    existing monitors;
    old_spec jsonb;
    new_spec jsonb;
    changed text[];
    updated monitors;
BEGIN
    PERFORM _check_acting_user(acting_user);
    existing := _lock_monitor(team_id, id);
    new_spec := _normalize_monitor_spec(to_jsonb(existing), patch::text);
    old_spec := _normalize_monitor_spec(to_jsonb(existing), '{}'::text);
    SELECT coalesce(array_agg(key ORDER BY key), '{}') INTO changed
    FROM jsonb_each(new_spec) AS n(key, value)
    WHERE n.value IS DISTINCT FROM old_spec->n.key;

    updated := jsonb_populate_record(existing, new_spec);
    updated.updated_at := now();
    IF updated.enabled AND NOT existing.enabled THEN
        updated.state := 'pending';
        updated.next_check_at := now();
    ELSIF NOT updated.enabled THEN
        updated.state := 'disabled';
        updated.next_check_at := NULL;
    ELSIF changed && ARRAY['url', 'method', 'headers', 'body', 'expected_status_codes', 'timeout_ms',
                           'frequency_minutes', 'follow_redirects', 'max_redirects', 'body_must_contain',
                           'body_must_not_contain', 'max_response_time_ms', 'regions', 'monitor_type'] THEN
        -- What is checked changed: check the new configuration promptly.
        updated.next_check_at := now();
    END IF;

    UPDATE monitors m SET
        name = updated.name, monitor_type = updated.monitor_type, url = updated.url,
        method = updated.method, headers = updated.headers, body = updated.body,
        expected_status_codes = updated.expected_status_codes, timeout_ms = updated.timeout_ms,
        frequency_minutes = updated.frequency_minutes, follow_redirects = updated.follow_redirects,
        max_redirects = updated.max_redirects, body_must_contain = updated.body_must_contain,
        body_must_not_contain = updated.body_must_not_contain,
        max_response_time_ms = updated.max_response_time_ms, regions = updated.regions,
        enabled = updated.enabled, state = updated.state, next_check_at = updated.next_check_at,
        alert_enabled = updated.alert_enabled, alert_threshold_failures = updated.alert_threshold_failures,
        alert_recipients = updated.alert_recipients, slack_channel = updated.slack_channel,
        slack_webhook_url = updated.slack_webhook_url, webhook_url = updated.webhook_url,
        alert_cooldown_minutes = updated.alert_cooldown_minutes,
        updated_at = updated.updated_at
    WHERE m.id = existing.id
    RETURNING m.* INTO updated;
    PERFORM _track_user_action('synthetic monitor updated', acting_user, updated,
                               jsonb_build_object('updated_fields', to_jsonb(changed)));
    IF updated.next_check_at IS DISTINCT FROM existing.next_check_at THEN
        PERFORM _wake_worker_at_commit();
    END IF;
    RETURN updated;
END $$;

CREATE FUNCTION delete_monitor(team_id bigint, id uuid, acting_user text DEFAULT NULL)
RETURNS boolean
LANGUAGE plpgsql
SET search_path = synthetic_monitoring, pg_catalog, pg_temp
AS $$
DECLARE
    existing monitors;
BEGIN
    PERFORM _check_acting_user(acting_user);
    existing := _lock_monitor(team_id, id);
    DELETE FROM monitors m WHERE m.id = existing.id;
    PERFORM _track_user_action('synthetic monitor deleted', acting_user, existing);
    RETURN true;
END $$;

-- Pausing and resuming: idempotent; an actual change is tracked, and a resume
-- wakes the worker at commit so the monitor is checked promptly.
CREATE FUNCTION _set_paused(team_id bigint, id uuid, pause boolean, acting_user text)
RETURNS monitors
LANGUAGE plpgsql
SET search_path = synthetic_monitoring, pg_catalog, pg_temp
AS $$
DECLARE
    existing monitors;
BEGIN
    PERFORM _check_acting_user(acting_user);
    existing := _lock_monitor(team_id, id);
    IF existing.enabled = NOT pause THEN
        RETURN existing;
    END IF;
    UPDATE monitors m
    SET enabled = NOT pause,
        state = CASE WHEN pause THEN 'disabled' ELSE 'pending' END,
        next_check_at = CASE WHEN pause THEN NULL ELSE now() END,
        updated_at = now()
    WHERE m.id = existing.id
    RETURNING m.* INTO existing;
    PERFORM _track_user_action(CASE WHEN pause THEN 'synthetic monitor paused' ELSE 'synthetic monitor resumed' END,
                               acting_user, existing);
    IF NOT pause THEN
        PERFORM _wake_worker_at_commit();
    END IF;
    RETURN existing;
END $$;

CREATE FUNCTION pause_monitor(team_id bigint, id uuid, acting_user text DEFAULT NULL)
RETURNS monitors
LANGUAGE sql
SET search_path = synthetic_monitoring, pg_catalog, pg_temp
AS $$ SELECT _set_paused(team_id, id, true, acting_user) $$;

CREATE FUNCTION resume_monitor(team_id bigint, id uuid, acting_user text DEFAULT NULL)
RETURNS monitors
LANGUAGE sql
SET search_path = synthetic_monitoring, pg_catalog, pg_temp
AS $$ SELECT _set_paused(team_id, id, false, acting_user) $$;

CREATE FUNCTION get_monitor(team_id bigint, id uuid, recent_checks integer DEFAULT 10)
RETURNS jsonb
LANGUAGE plpgsql STABLE
SET search_path = synthetic_monitoring, pg_catalog, pg_temp
AS $$
DECLARE
    target monitors;
BEGIN
    PERFORM _check_team(team_id);
    IF recent_checks IS NULL OR recent_checks NOT BETWEEN 0 AND 100 THEN
        RAISE EXCEPTION 'invalid recent_checks: %', coalesce(recent_checks::text, 'null')
            USING ERRCODE = '22023', HINT = 'an integer from 0 to 100';
    END IF;
    SELECT m.* INTO target FROM monitors m WHERE m.team_id = get_monitor.team_id AND m.id = get_monitor.id;
    IF NOT FOUND THEN
        PERFORM _monitor_not_found(team_id, id);
    END IF;
    RETURN to_jsonb(target) || jsonb_build_object('recent_checks', coalesce((
        SELECT jsonb_agg(to_jsonb(c) ORDER BY c.id DESC)
        FROM (SELECT * FROM checks c WHERE c.monitor_id = target.id ORDER BY c.id DESC LIMIT recent_checks) c
    ), '[]'::jsonb));
END $$;

CREATE FUNCTION _check_page(limit_ integer, offset_ integer, max_limit integer) RETURNS void
LANGUAGE plpgsql STABLE
SET search_path = synthetic_monitoring, pg_catalog, pg_temp
AS $$
BEGIN
    IF limit_ IS NULL OR limit_ NOT BETWEEN 1 AND max_limit THEN
        RAISE EXCEPTION 'invalid limit: %', coalesce(limit_::text, 'null')
            USING ERRCODE = '22023', HINT = format('an integer from 1 to %s', max_limit);
    END IF;
    IF offset_ IS NULL OR offset_ < 0 THEN
        RAISE EXCEPTION 'invalid offset: %', coalesce(offset_::text, 'null')
            USING ERRCODE = '22023', HINT = 'an integer of at least 0';
    END IF;
END $$;

CREATE FUNCTION list_monitors(
    team_id bigint,
    state text DEFAULT NULL,
    monitor_type text DEFAULT NULL,
    enabled boolean DEFAULT NULL,
    search text DEFAULT NULL,
    "limit" integer DEFAULT 100,
    "offset" integer DEFAULT 0
)
RETURNS SETOF monitors
LANGUAGE plpgsql STABLE
SET search_path = synthetic_monitoring, pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM _check_team(team_id);
    PERFORM _check_page("limit", "offset", 1000);
    IF state IS NOT NULL AND state <> ALL (ARRAY['pending', 'healthy', 'failing', 'error', 'disabled']) THEN
        RAISE EXCEPTION 'invalid state: "%"', left(state, 60)
            USING ERRCODE = '22023', HINT = 'one of: pending, healthy, failing, error, disabled';
    END IF;
    IF monitor_type IS NOT NULL AND monitor_type <> ALL (ARRAY['http', 'web_performance']) THEN
        RAISE EXCEPTION 'invalid monitor_type: "%"', left(monitor_type, 60)
            USING ERRCODE = '22023', HINT = 'one of: http, web_performance';
    END IF;
    RETURN QUERY
    SELECT m.* FROM monitors m
    WHERE m.team_id = list_monitors.team_id
      AND (list_monitors.state IS NULL OR m.state = list_monitors.state)
      AND (list_monitors.monitor_type IS NULL OR m.monitor_type = list_monitors.monitor_type)
      AND (list_monitors.enabled IS NULL OR m.enabled = list_monitors.enabled)
      AND (search IS NULL OR strpos(lower(m.name), lower(search)) > 0 OR strpos(lower(m.url), lower(search)) > 0)
    ORDER BY m.created_at DESC, m.id
    LIMIT "limit" OFFSET "offset";
END $$;

CREATE FUNCTION monitor_checks(team_id bigint, id uuid, "limit" integer DEFAULT 50, before bigint DEFAULT NULL)
RETURNS SETOF checks
LANGUAGE plpgsql STABLE
SET search_path = synthetic_monitoring, pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM _check_team(team_id);
    PERFORM _check_page("limit", 0, 1000);
    PERFORM 1 FROM monitors m WHERE m.team_id = monitor_checks.team_id AND m.id = monitor_checks.id;
    IF NOT FOUND THEN
        PERFORM _monitor_not_found(team_id, id);
    END IF;
    RETURN QUERY
    SELECT c.* FROM checks c
    WHERE c.monitor_id = monitor_checks.id
      AND (before IS NULL OR c.id < before)
    ORDER BY c.id DESC
    LIMIT "limit";
END $$;

COMMENT ON FUNCTION create_monitor(bigint, jsonb, text) IS
    'Creates a monitor of the team from a JSON spec whose keys are column names (name and url required; unknown keys refused) and returns it. New monitors are pending and due at once. Records "synthetic monitor created" when acting_user is given.';
COMMENT ON FUNCTION update_monitor(bigint, uuid, jsonb, text) IS
    'Applies a JSON patch (PATCH semantics; a full spec works as PUT), re-validates the whole monitor and returns it. A changed check configuration is due at once. Records "synthetic monitor updated" with updated_fields when acting_user is given.';
COMMENT ON FUNCTION delete_monitor(bigint, uuid, text) IS
    'Deletes a monitor and its checks; returns true, or raises P0002 when the team has no such monitor. Events are kept.';
COMMENT ON FUNCTION pause_monitor(bigint, uuid, text) IS
    'Pauses a monitor: state disabled, no further scheduled checks. Idempotent. Returns the monitor.';
COMMENT ON FUNCTION resume_monitor(bigint, uuid, text) IS
    'Resumes a paused monitor: state pending and due at once. Idempotent. Returns the monitor.';
COMMENT ON FUNCTION get_monitor(bigint, uuid, integer) IS
    'The monitor as JSON with its most recent checks (recent_checks, newest first; default 10, at most 100).';
COMMENT ON FUNCTION list_monitors(bigint, text, text, boolean, text, integer, integer) IS
    'The team''s monitors, newest first, optionally filtered by state, monitor_type, enabled and a case-insensitive search of name or URL. limit 1-1000 (default 100), offset >= 0.';
COMMENT ON FUNCTION monitor_checks(bigint, uuid, integer, bigint) IS
    'Check history of a monitor, newest first. Keyset paging: pass the smallest id of the previous page as before; pages stay stable while new checks arrive. limit 1-1000 (default 50).';
