-- The worker's side of the schema: scheduling, claiming, recording.
--
-- Scheduling: every monitor has a phase (a fixed offset within its interval,
-- derived from its id) so that monitors created together spread over the
-- interval instead of firing in the same second. After a check of the slot S
-- the next slot is the first phase-aligned time after max(S, now()): on time,
-- that is S + interval (no drift); after downtime, an overdue monitor runs
-- once and then rejoins its phase (no catch-up storm).

-- These three stay inlinable (no SET clause, one expression, built-ins only):
-- they run for every claimed monitor.

-- A monitor's fixed offset within its interval, from its id.
CREATE FUNCTION _slot_phase_ms(id uuid, interval_ms bigint) RETURNS bigint
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$ SELECT ((hashtextextended(id::text, 0) % interval_ms) + interval_ms) % interval_ms $$;

-- The first time after `after` that is phase_ms past a multiple of interval_ms.
CREATE FUNCTION _next_aligned(after timestamptz, interval_ms bigint, phase_ms bigint) RETURNS timestamptz
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
    SELECT to_timestamp(((floor(((extract(epoch FROM after) * 1000)::numeric - phase_ms) / interval_ms) + 1)
                         * interval_ms + phase_ms) / 1000.0)
$$;

-- The monitor's next slot after `after`.
CREATE FUNCTION _next_slot(id uuid, frequency_minutes integer, after timestamptz) RETURNS timestamptz
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
    SELECT synthetic_monitoring._next_aligned(after, frequency_minutes * 60000::bigint,
                                              synthetic_monitoring._slot_phase_ms(id, frequency_minutes * 60000::bigint))
$$;

-- Claims up to max_checks due monitors of the region in one statement and
-- returns each as the JSON job the checker runs. SKIP LOCKED: a monitor being
-- edited is simply claimed on the next pass.
CREATE FUNCTION _claim_due_checks(region text, max_checks integer) RETURNS SETOF jsonb
LANGUAGE sql
SET search_path = synthetic_monitoring, pg_catalog, pg_temp
AS $$
    WITH due AS (
        SELECT m.id FROM monitors m
        WHERE m.enabled AND m.next_check_at <= now() AND m.in_flight_slot IS NULL
          AND m.monitor_type = 'http' AND region = ANY (m.regions)
        ORDER BY m.next_check_at
        LIMIT max_checks
        FOR UPDATE SKIP LOCKED
    ), claimed AS (
        UPDATE monitors m
        SET in_flight_slot = m.next_check_at,
            next_check_at = _next_slot(m.id, m.frequency_minutes, greatest(m.next_check_at, now()))
        FROM due WHERE m.id = due.id
        RETURNING m.*
    )
    SELECT jsonb_build_object(
        'monitor_id', c.id, 'url', c.url, 'method', c.method, 'headers', c.headers, 'body', c.body,
        'expected_status_codes', c.expected_status_codes, 'timeout_ms', c.timeout_ms,
        'follow_redirects', c.follow_redirects, 'max_redirects', c.max_redirects,
        'body_must_contain', c.body_must_contain, 'body_must_not_contain', c.body_must_not_contain,
        'max_response_time_ms', c.max_response_time_ms,
        'scheduled_at', extract(epoch FROM c.in_flight_slot)
    )
    FROM claimed c
$$;

-- When the next claimable monitor of the region is due (NULL if none), so the
-- worker can sleep exactly until then.
CREATE FUNCTION _next_due_at(region text) RETURNS timestamptz
LANGUAGE sql STABLE
SET search_path = synthetic_monitoring, pg_catalog, pg_temp
AS $$
    SELECT min(m.next_check_at) FROM monitors m
    WHERE m.enabled AND m.in_flight_slot IS NULL AND m.monitor_type = 'http' AND region = ANY (m.regions)
$$;

-- Start-up recovery: slots claimed by a worker that died before recording them
-- become due again, so each runs once, promptly.
CREATE FUNCTION _recover_interrupted_checks(region text) RETURNS integer
LANGUAGE sql
SET search_path = synthetic_monitoring, pg_catalog, pg_temp
AS $$
    WITH recovered AS (
        UPDATE monitors m
        SET next_check_at = CASE WHEN m.enabled THEN m.in_flight_slot END,
            in_flight_slot = NULL
        WHERE m.in_flight_slot IS NOT NULL AND region = ANY (m.regions)
        RETURNING 1
    )
    SELECT count(*)::integer FROM recovered
$$;

-- Records a batch of check results (a JSON array, as produced by the checker)
-- in one statement: the check rows, each monitor's new state, one
-- synthetic_http_check event per check, and the alerts the results trigger as
-- outbox rows (one per destination). All commit together or not at all.
-- Results of monitors deleted meanwhile are dropped. Returns the check rows.
--
-- Alert rules: a failure alert when consecutive_failures reaches the
-- threshold (alerts enabled, monitor not paused); while still failing, a
-- reminder at most once per cooldown; a success after a failure alert sends
-- one recovery notice. A fault of the checker itself (internal) alerts nobody.
CREATE FUNCTION _record_checks(results jsonb) RETURNS SETOF checks
LANGUAGE sql
SET search_path = synthetic_monitoring, pg_catalog, pg_temp
AS $$
    WITH r AS (
        SELECT x.*, to_timestamp(x.started_epoch) AS started_at, to_timestamp(x.finished_epoch) AS finished_at
        FROM jsonb_to_recordset(results) AS x(
            monitor_id uuid, trigger text, region text, scheduled_epoch double precision,
            started_epoch double precision, finished_epoch double precision, success boolean,
            status_code integer, dns_ms double precision, connect_ms double precision,
            tls_ms double precision, ttfb_ms double precision, download_ms double precision,
            total_ms double precision, bytes_read bigint, body_truncated boolean, redirects integer, final_url text,
            tls_cert_expires_epoch double precision, error_class text, error_message text)
    ), locked AS (
        -- The current alert state, locked so that the decision and the update agree.
        SELECT m.id, m.enabled, m.alert_enabled, m.alerting, m.last_alerted_at, m.consecutive_failures,
               m.alert_threshold_failures, m.alert_cooldown_minutes
        FROM monitors m
        WHERE m.id IN (SELECT monitor_id FROM r)
        FOR UPDATE
    ), decided AS (
        SELECT r.monitor_id, r.success, r.error_class, r.finished_at, r.trigger,
               l.consecutive_failures AS failures_before,
               CASE
                   WHEN NOT l.enabled THEN NULL
                   WHEN r.success THEN CASE WHEN l.alerting THEN 'recovery' END
                   WHEN r.error_class = 'internal' OR NOT l.alert_enabled THEN NULL
                   WHEN l.consecutive_failures + 1 < l.alert_threshold_failures THEN NULL
                   WHEN NOT l.alerting THEN 'failure'
                   WHEN l.last_alerted_at + make_interval(mins => l.alert_cooldown_minutes) <= r.finished_at THEN 'reminder'
               END AS alert_kind
        FROM r JOIN locked l ON l.id = r.monitor_id
    ), updated AS (
        UPDATE monitors m
        SET state = CASE
                WHEN NOT m.enabled THEN 'disabled'
                WHEN d.success THEN 'healthy'
                WHEN d.error_class = 'internal' THEN 'error'
                ELSE 'failing' END,
            consecutive_failures = CASE
                WHEN d.success THEN 0
                WHEN d.error_class = 'internal' THEN m.consecutive_failures
                ELSE m.consecutive_failures + 1 END,
            last_checked_at = greatest(m.last_checked_at, d.finished_at),
            in_flight_slot = CASE WHEN d.trigger = 'scheduled' THEN NULL ELSE m.in_flight_slot END,
            alerting = CASE d.alert_kind WHEN 'recovery' THEN false WHEN 'failure' THEN true ELSE m.alerting END,
            last_alerted_at = CASE WHEN d.alert_kind IN ('failure', 'reminder') THEN d.finished_at ELSE m.last_alerted_at END
        FROM decided d
        WHERE m.id = d.monitor_id
        RETURNING m.id, m.team_id, m.name, m.monitor_type, m.url, m.method, m.expected_status_codes,
                  m.consecutive_failures, m.alert_recipients, m.slack_channel, m.slack_webhook_url, m.webhook_url,
                  d.alert_kind, d.failures_before
    ), inserted AS (
        INSERT INTO checks (monitor_id, team_id, region, trigger, scheduled_at, started_at, finished_at,
                            success, status_code, response_time_ms, dns_ms, connect_ms, tls_ms, ttfb_ms,
                            download_ms, total_ms, bytes_read, body_truncated, redirects, final_url,
                            tls_cert_expires_at, error_class, error_message)
        SELECT r.monitor_id, u.team_id, r.region, r.trigger, to_timestamp(r.scheduled_epoch), r.started_at,
               r.finished_at, r.success, r.status_code, r.total_ms, r.dns_ms, r.connect_ms, r.tls_ms,
               r.ttfb_ms, r.download_ms, r.total_ms, r.bytes_read, coalesce(r.body_truncated, false),
               r.redirects, left(r.final_url, 4096), to_timestamp(r.tls_cert_expires_epoch), r.error_class, r.error_message
        FROM r JOIN updated u ON u.id = r.monitor_id
        RETURNING *
    ), events_written AS (
        INSERT INTO events (uuid, event, distinct_id, team_id, "timestamp", properties)
        SELECT _uuid_v7(i.started_at), 'synthetic_http_check', 'monitor_' || u.id, u.team_id, i.started_at,
               jsonb_build_object(
                   'monitor_id', u.id, 'monitor_name', u.name, 'monitor_type', u.monitor_type,
                   'url', _redact_url(u.url), 'region', i.region, 'success', i.success,
                   'response_time_ms', round(i.response_time_ms::numeric, 1), 'status_code', i.status_code,
                   'error_message', i.error_message, 'error_class', i.error_class,
                   'method', u.method, 'expected_status_codes', to_jsonb(u.expected_status_codes),
                   'consecutive_failures', u.consecutive_failures, 'trigger', i.trigger, 'check_id', i.id,
                   'dns_ms', round(i.dns_ms::numeric, 1), 'connect_ms', round(i.connect_ms::numeric, 1),
                   'tls_ms', round(i.tls_ms::numeric, 1), 'ttfb_ms', round(i.ttfb_ms::numeric, 1),
                   'download_ms', round(i.download_ms::numeric, 1), 'total_ms', round(i.total_ms::numeric, 1),
                   'bytes_read', i.bytes_read, 'body_truncated', i.body_truncated)
        FROM inserted i JOIN updated u ON u.id = i.monitor_id
    ), alerts_queued AS (
        INSERT INTO outbox (team_id, monitor_id, kind, channel, destination, payload)
        SELECT u.team_id, u.id, u.alert_kind, dest.channel, dest.destination,
               jsonb_build_object(
                   'kind', u.alert_kind, 'team_id', u.team_id, 'monitor_id', u.id, 'monitor_name', u.name,
                   'url', _redact_url(u.url), 'region', i.region, 'checked_at', i.finished_at, 'check_id', i.id,
                   'consecutive_failures', CASE WHEN u.alert_kind = 'recovery' THEN u.failures_before
                                                ELSE u.consecutive_failures END,
                   'status_code', i.status_code, 'response_time_ms', round(i.response_time_ms::numeric, 1),
                   'error_class', i.error_class, 'error_message', i.error_message)
        FROM updated u
        JOIN inserted i ON i.monitor_id = u.id
        CROSS JOIN LATERAL (
            SELECT 'email', recipient FROM unnest(u.alert_recipients) AS recipient
            UNION ALL SELECT 'slack', coalesce(u.slack_webhook_url, u.slack_channel)
                WHERE coalesce(u.slack_webhook_url, u.slack_channel) IS NOT NULL
            UNION ALL SELECT 'webhook', u.webhook_url WHERE u.webhook_url IS NOT NULL
        ) AS dest(channel, destination)
        WHERE u.alert_kind IS NOT NULL
    )
    SELECT * FROM inserted
$$;

-- The dispatcher's claim: due pending outbox rows become 'delivering' (and
-- count an attempt) before any network I/O, in their own transaction. SKIP
-- LOCKED: two dispatchers never take the same row.
CREATE FUNCTION _claim_deliveries(max_rows integer) RETURNS SETOF jsonb
LANGUAGE sql
SET search_path = synthetic_monitoring, pg_catalog, pg_temp
AS $$
    WITH due AS (
        SELECT o.id FROM outbox o
        WHERE o.state = 'pending' AND o.next_attempt_at <= now()
        ORDER BY o.next_attempt_at
        LIMIT max_rows
        FOR UPDATE SKIP LOCKED
    ), claimed AS (
        UPDATE outbox o SET state = 'delivering', attempts = o.attempts + 1, claimed_at = now()
        FROM due WHERE o.id = due.id
        RETURNING o.*
    )
    SELECT jsonb_build_object('id', c.id, 'kind', c.kind, 'channel', c.channel, 'destination', c.destination,
                              'payload', c.payload, 'idempotency_key', c.idempotency_key, 'attempts', c.attempts)
    FROM claimed c
$$;

-- Outcomes of deliveries: delivered; or retried with exponential backoff and
-- jitter (or after the receiver's Retry-After); or dead after the last attempt
-- or a permanent refusal, keeping the last error.
CREATE FUNCTION _complete_deliveries(outcomes jsonb, max_attempts integer, retry_base_ms integer) RETURNS integer
LANGUAGE sql
SET search_path = synthetic_monitoring, pg_catalog, pg_temp
AS $$
    WITH done AS (
        UPDATE outbox o
        SET state = CASE WHEN x.delivered THEN 'delivered'
                         WHEN x.permanent OR o.attempts >= max_attempts THEN 'dead'
                         ELSE 'pending' END,
            delivered_at = CASE WHEN x.delivered THEN now() END,
            last_error = CASE WHEN x.delivered THEN o.last_error ELSE left(x.error, 2000) END,
            next_attempt_at = CASE
                WHEN x.delivered THEN o.next_attempt_at
                WHEN x.retry_after_s IS NOT NULL THEN now() + make_interval(secs => x.retry_after_s)
                ELSE now() + make_interval(secs => least(retry_base_ms * 2.0 ^ (o.attempts - 1), 3600000.0)
                                                    * (0.5 + random()) / 1000.0)
            END
        FROM jsonb_to_recordset(outcomes) AS x(id bigint, delivered boolean, permanent boolean,
                                               error text, retry_after_s double precision)
        WHERE o.id = x.id AND o.state = 'delivering'
        RETURNING 1
    )
    SELECT count(*)::integer FROM done
$$;

-- Start-up recovery of the outbox: rows a dead worker had claimed are pending
-- again and will be delivered with the same idempotency key.
CREATE FUNCTION _recover_deliveries() RETURNS integer
LANGUAGE sql
SET search_path = synthetic_monitoring, pg_catalog, pg_temp
AS $$
    WITH recovered AS (
        UPDATE outbox SET state = 'pending', next_attempt_at = now() WHERE state = 'delivering' RETURNING 1
    )
    SELECT count(*)::integer FROM recovered
$$;

-- When the next pending delivery is due, in seconds from now (NULL if none).
CREATE FUNCTION _seconds_to_next_delivery() RETURNS double precision
LANGUAGE sql STABLE
SET search_path = synthetic_monitoring, pg_catalog, pg_temp
AS $$
    SELECT extract(epoch FROM min(next_attempt_at) - clock_timestamp())::double precision
    FROM outbox WHERE state = 'pending'
$$;

-- The team's alert notifications, newest first. Webhook and Slack URLs are
-- shown without their path, which holds their secret.
CREATE FUNCTION alert_outbox(team_id bigint, for_monitor uuid DEFAULT NULL, with_state text DEFAULT NULL,
                             "limit" integer DEFAULT 100)
RETURNS TABLE (id bigint, monitor_id uuid, kind text, channel text, destination text, state text,
               attempts integer, next_attempt_at timestamptz, last_error text, created_at timestamptz,
               delivered_at timestamptz, idempotency_key uuid)
LANGUAGE plpgsql STABLE
SET search_path = synthetic_monitoring, pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM _check_team(team_id);
    PERFORM _check_page("limit", 0, 1000);
    IF with_state IS NOT NULL AND with_state <> ALL (ARRAY['pending', 'delivering', 'delivered', 'dead']) THEN
        RAISE EXCEPTION 'invalid with_state: "%"', left(with_state, 60)
            USING ERRCODE = '22023', HINT = 'one of: pending, delivering, delivered, dead';
    END IF;
    RETURN QUERY
    SELECT o.id, o.monitor_id, o.kind, o.channel,
           CASE WHEN o.destination ~ '^https?://'
                THEN regexp_replace(o.destination, '^(https?://)([^/?#@]*@)?([^/?#@]+).*$', '\1\3/***')
                ELSE o.destination END,
           o.state, o.attempts, o.next_attempt_at, o.last_error, o.created_at, o.delivered_at, o.idempotency_key
    FROM outbox o
    WHERE o.team_id = alert_outbox.team_id
      AND (for_monitor IS NULL OR o.monitor_id = for_monitor)
      AND (with_state IS NULL OR o.state = with_state)
    ORDER BY o.id DESC
    LIMIT "limit";
END $$;

-- Sends a dead notification again: pending now, with a fresh round of attempts
-- and the same idempotency key.
CREATE FUNCTION retry_alert(team_id bigint, outbox_id bigint) RETURNS boolean
LANGUAGE plpgsql
SET search_path = synthetic_monitoring, pg_catalog, pg_temp
AS $$
DECLARE
    current_state text;
BEGIN
    PERFORM _check_team(team_id);
    SELECT o.state INTO current_state FROM outbox o
    WHERE o.id = outbox_id AND o.team_id = retry_alert.team_id FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'alert % not found', coalesce(outbox_id::text, 'null')
            USING ERRCODE = 'P0002', HINT = format('no outbox row with this id exists in team %s', team_id);
    END IF;
    IF current_state <> 'dead' THEN
        RAISE EXCEPTION 'invalid outbox_id: alert % is %, only dead alerts can be retried', outbox_id, current_state
            USING ERRCODE = '22023', HINT = 'pending and delivering alerts are retried automatically';
    END IF;
    UPDATE outbox o SET state = 'pending', attempts = 0, next_attempt_at = now() WHERE o.id = outbox_id;
    PERFORM _wake_worker_at_commit();
    RETURN true;
END $$;

-- Runs one check of the monitor now, in this session, and records it with
-- trigger 'manual'. Works with or without the worker.
CREATE FUNCTION test_monitor(team_id bigint, id uuid) RETURNS checks
LANGUAGE plpgsql
SET search_path = synthetic_monitoring, pg_catalog, pg_temp
AS $$
DECLARE
    target monitors;
    result jsonb;
    recorded checks;
BEGIN
    PERFORM _check_team(team_id);
    SELECT m.* INTO target FROM monitors m WHERE m.team_id = test_monitor.team_id AND m.id = test_monitor.id;
    IF NOT FOUND THEN
        PERFORM _monitor_not_found(team_id, id);
    END IF;
    IF target.monitor_type <> 'http' THEN
        RAISE EXCEPTION 'test_monitor runs http monitors only; monitor % is %', target.id, target.monitor_type
            USING ERRCODE = '0A000', HINT = 'web_performance checks are run by a Lighthouse runner';
    END IF;
    result := _run_check(jsonb_build_object(
        'monitor_id', target.id, 'url', target.url, 'method', target.method, 'headers', target.headers,
        'body', target.body, 'expected_status_codes', target.expected_status_codes,
        'timeout_ms', target.timeout_ms, 'follow_redirects', target.follow_redirects,
        'max_redirects', target.max_redirects, 'body_must_contain', target.body_must_contain,
        'body_must_not_contain', target.body_must_not_contain,
        'max_response_time_ms', target.max_response_time_ms));
    SELECT * INTO recorded FROM _record_checks(jsonb_build_array(result));
    IF recorded.id IS NULL THEN
        -- Deleted by another session while its check ran.
        PERFORM _monitor_not_found(team_id, id);
    END IF;
    IF EXISTS (SELECT 1 FROM outbox o WHERE o.monitor_id = target.id AND o.state = 'pending' AND o.created_at = now()) THEN
        PERFORM _wake_worker_at_commit();  -- deliver the alert it queued
    END IF;
    RETURN recorded;
END $$;

-- Health of the worker, from shared memory, plus the schedule's lag.
CREATE FUNCTION worker_status(
    OUT running boolean, OUT pid integer, OUT started_at timestamptz, OUT last_loop_at timestamptz,
    OUT region text, OUT scheduling_enabled boolean, OUT checks_in_flight bigint, OUT checks_done bigint,
    OUT oldest_overdue_seconds double precision)
LANGUAGE sql STABLE
SET search_path = synthetic_monitoring, pg_catalog, pg_temp
AS $$
    SELECT s.running, s.pid, s.started_at, s.last_loop_at, current_setting('synthetic_monitoring.region'),
           current_setting('synthetic_monitoring.worker_enabled')::boolean, s.checks_in_flight, s.checks_done,
           (SELECT extract(epoch FROM now() - min(m.next_check_at))::double precision
            FROM monitors m
            WHERE m.enabled AND m.in_flight_slot IS NULL AND m.monitor_type = 'http'
              AND current_setting('synthetic_monitoring.region') = ANY (m.regions)
              AND m.next_check_at <= now())
    FROM _worker_shared_status() s
$$;

COMMENT ON FUNCTION alert_outbox(bigint, uuid, text, integer) IS
    'The team''s alert notifications (optionally of one monitor, in one state), newest first: kind, channel, destination, state (pending, delivering, delivered, dead), attempts, next attempt, last error.';
COMMENT ON FUNCTION retry_alert(bigint, bigint) IS
    'Queues a dead alert notification again (a fresh round of attempts, same idempotency key). 22023 unless the row is dead; P0002 when the team has no such row.';
COMMENT ON FUNCTION test_monitor(bigint, uuid) IS
    'Runs the monitor''s HTTP check now in the calling session (bounded by its timeout), records it with trigger manual (check row, state, event) and returns the check row. Works with or without the worker.';
COMMENT ON FUNCTION worker_status() IS
    'Health of the background worker: whether it runs, its pid, start and last loop time, whether scheduled checks are switched on (worker_enabled), checks in flight and done since start, and how late the most overdue monitor of this region is (seconds, NULL when none is overdue).';

DO $$
BEGIN
    IF NOT _is_preloaded() THEN
        RAISE WARNING 'synthetic_monitoring is not in shared_preload_libraries: no background worker runs scheduled checks'
            USING HINT = 'Add synthetic_monitoring to shared_preload_libraries and restart; the SQL API and test_monitor work meanwhile.';
    END IF;
END $$;
