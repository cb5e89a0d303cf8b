-- Tables of the synthetic_monitoring extension.
--
-- The SQL API (create_monitor, update_monitor, ...) validates every field and
-- reports a precise error; the CHECK constraints below repeat the same rules in
-- a coarser form so that a direct INSERT or UPDATE from psql cannot store a row
-- the API would refuse.

CREATE TABLE monitors (
    id                        uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    team_id                   bigint      NOT NULL CHECK (team_id > 0),
    name                      text        NOT NULL
        CHECK (char_length(name) BETWEEN 1 AND 400 AND name ~ '[^[:space:]]'),
    monitor_type              text        NOT NULL DEFAULT 'http'
        CHECK (monitor_type IN ('http', 'web_performance')),
    url                       text        NOT NULL
        CHECK (char_length(url) <= 2048 AND url ~ '^https?://[^/?#[:space:]]+(/[^[:space:]]*)?$'),
    method                    text        NOT NULL DEFAULT 'GET'
        CHECK (method IN ('GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE')),
    headers                   jsonb       NOT NULL DEFAULT '{}'
        CHECK (jsonb_typeof(headers) = 'object'
               AND NOT jsonb_path_exists(headers, '$.* ? (@.type() != "string" || @ like_regex "[\\r\\n]")')
               AND NOT jsonb_path_exists(headers, '$.keyvalue() ? (@.key like_regex "^(connection|content-length|transfer-encoding|keep-alive|proxy-connection|te|trailer|upgrade)$" flag "i" || !(@.key like_regex "^[!#$%&''*+.^_`|~0-9A-Za-z-]+$"))')),
    body                      text
        CHECK (octet_length(body) <= 65536),
    expected_status_codes     text[]      NOT NULL DEFAULT '{2xx}'
        CHECK (cardinality(expected_status_codes) BETWEEN 1 AND 50
               AND array_position(expected_status_codes, NULL) IS NULL
               AND array_to_string(expected_status_codes, ',') ~ '^([1-5]xx|[1-5][0-9][0-9])(,([1-5]xx|[1-5][0-9][0-9]))*$'),
    timeout_ms                integer     NOT NULL DEFAULT 30000
        CHECK (timeout_ms BETWEEN 100 AND 300000),
    frequency_minutes         integer     NOT NULL DEFAULT 5
        CHECK (frequency_minutes BETWEEN 1 AND 60),
    follow_redirects          boolean     NOT NULL DEFAULT true,
    max_redirects             integer     NOT NULL DEFAULT 10
        CHECK (max_redirects BETWEEN 0 AND 20),
    body_must_contain         text
        CHECK (char_length(body_must_contain) BETWEEN 1 AND 1000),
    body_must_not_contain     text
        CHECK (char_length(body_must_not_contain) BETWEEN 1 AND 1000),
    max_response_time_ms      integer
        CHECK (max_response_time_ms > 0),
    regions                   text[]      NOT NULL DEFAULT '{local}'
        CHECK (cardinality(regions) BETWEEN 1 AND 20
               AND array_position(regions, NULL) IS NULL
               AND array_to_string(regions, ',') ~ '^[a-z0-9][a-z0-9-]{0,62}(,[a-z0-9][a-z0-9-]{0,62})*$'),
    enabled                   boolean     NOT NULL DEFAULT true,
    state                     text        NOT NULL DEFAULT 'pending'
        CHECK (state IN ('pending', 'healthy', 'failing', 'error', 'disabled')),
    consecutive_failures      integer     NOT NULL DEFAULT 0
        CHECK (consecutive_failures >= 0),
    last_checked_at           timestamptz,
    next_check_at             timestamptz,
    last_alerted_at           timestamptz,
    in_flight_slot            timestamptz,
    alert_enabled             boolean     NOT NULL DEFAULT true,
    alert_threshold_failures  integer     NOT NULL DEFAULT 3
        CHECK (alert_threshold_failures BETWEEN 1 AND 100),
    alert_recipients          text[]      NOT NULL DEFAULT '{}'
        CHECK (cardinality(alert_recipients) <= 50
               AND array_position(alert_recipients, NULL) IS NULL
               AND array_to_string(alert_recipients, ',') ~ '^([^@,[:space:]]+@[^@,[:space:]]+\.[^@,[:space:]]+(,[^@,[:space:]]+@[^@,[:space:]]+\.[^@,[:space:]]+)*)?$'),
    slack_channel             text
        CHECK (slack_channel ~ '^#?[A-Za-z0-9._-]{1,80}$'),
    slack_webhook_url         text
        CHECK (char_length(slack_webhook_url) <= 2048 AND slack_webhook_url ~ '^https?://[^/?#[:space:]]+(/[^[:space:]]*)?$'),
    webhook_url               text
        CHECK (char_length(webhook_url) <= 2048 AND webhook_url ~ '^https?://[^/?#[:space:]]+(/[^[:space:]]*)?$'),
    alert_cooldown_minutes    integer     NOT NULL DEFAULT 60
        CHECK (alert_cooldown_minutes BETWEEN 1 AND 10080),
    alerting                  boolean     NOT NULL DEFAULT false,
    created_by                text
        CHECK (char_length(created_by) BETWEEN 1 AND 200),
    created_at                timestamptz NOT NULL DEFAULT now(),
    updated_at                timestamptz NOT NULL DEFAULT now(),

    CONSTRAINT monitors_timeout_below_interval
        CHECK (timeout_ms < frequency_minutes * 60000),
    CONSTRAINT monitors_max_response_time_within_timeout
        CHECK (max_response_time_ms <= timeout_ms),
    CONSTRAINT monitors_disabled_iff_paused
        CHECK ((state = 'disabled') = (NOT enabled)),
    CONSTRAINT monitors_paused_not_scheduled
        CHECK (enabled OR next_check_at IS NULL),
    CONSTRAINT monitors_enabled_scheduled
        CHECK (NOT enabled OR next_check_at IS NOT NULL),
    CONSTRAINT monitors_finite_schedule
        CHECK (isfinite(next_check_at) AND isfinite(in_flight_slot)),
    -- Lets checks and outbox rows reference (id, team_id), so they can never be
    -- attributed to another team than their monitor's.
    CONSTRAINT monitors_id_team_key UNIQUE (id, team_id),
    CONSTRAINT monitors_web_performance_is_get
        CHECK (monitor_type = 'http' OR (method = 'GET' AND body IS NULL)),
    CONSTRAINT monitors_no_body_for_head
        CHECK (method <> 'HEAD' OR body IS NULL)
)
-- Room on each page for the worker's updates of state columns (none of them
-- indexed) to stay heap-only: no new index entries, less WAL per check.
WITH (fillfactor = 70);

-- The API's listing order and team scoping.
CREATE INDEX monitors_team_created_idx ON monitors (team_id, created_at DESC, id);
-- The worker's claim query: enabled monitors by due time.
CREATE INDEX monitors_due_idx ON monitors (next_check_at) WHERE enabled;

COMMENT ON TABLE monitors IS
    'Monitor definitions, one row per monitor, scoped by team_id. Write through create_monitor/update_monitor/pause_monitor/resume_monitor/delete_monitor; the CHECK constraints refuse invalid direct writes.';
COMMENT ON COLUMN monitors.team_id IS 'Tenant. Every API function takes team_id first and sees only that team''s rows.';
COMMENT ON COLUMN monitors.url IS 'Target URL (http or https, absolute, at most 2048 characters), stored in normalized form.';
COMMENT ON COLUMN monitors.expected_status_codes IS 'Accepted response statuses: exact codes (''200'') and/or classes (''2xx''). Default: any 2xx.';
COMMENT ON COLUMN monitors.timeout_ms IS 'Hard limit for one whole check, redirects and body included, in milliseconds; below the interval.';
COMMENT ON COLUMN monitors.frequency_minutes IS 'Interval between scheduled checks, 1 to 60 minutes.';
COMMENT ON COLUMN monitors.body_must_contain IS 'Assertion: the decoded response body must contain this text.';
COMMENT ON COLUMN monitors.body_must_not_contain IS 'Assertion: the decoded response body must not contain this text.';
COMMENT ON COLUMN monitors.max_response_time_ms IS 'Assertion: the whole check must finish within this many milliseconds.';
COMMENT ON COLUMN monitors.regions IS 'Regions whose worker runs this monitor (synthetic_monitoring.region on each worker).';
COMMENT ON COLUMN monitors.state IS 'pending (never checked since created or resumed), healthy, failing (the target failed), error (the checker failed), disabled (paused).';
COMMENT ON COLUMN monitors.consecutive_failures IS 'Failed checks in a row; reset by a successful check.';
COMMENT ON COLUMN monitors.next_check_at IS 'When the next scheduled check is due; NULL while paused.';
COMMENT ON COLUMN monitors.in_flight_slot IS 'The scheduled slot whose check is running now (NULL when idle). A monitor never has two scheduled checks in flight.';
COMMENT ON COLUMN monitors.alert_threshold_failures IS 'Alert once consecutive_failures reaches this number.';
COMMENT ON COLUMN monitors.alert_cooldown_minutes IS 'Minimum time between two failure alerts of one outage.';
COMMENT ON COLUMN monitors.webhook_url IS 'Generic alert webhook: a signed JSON POST per alert (HMAC-SHA256 over timestamp and body).';
COMMENT ON COLUMN monitors.alerting IS 'A failure alert was sent for the current outage, so a success sends one recovery notice.';
COMMENT ON COLUMN monitors.created_by IS 'The acting user passed to create_monitor, if any.';

CREATE TABLE checks (
    id                    bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    monitor_id            uuid        NOT NULL,
    team_id               bigint      NOT NULL CHECK (team_id > 0),
    region                text        NOT NULL CHECK (region ~ '^[a-z0-9][a-z0-9-]{0,62}$'),
    trigger               text        NOT NULL
        CHECK (trigger IN ('scheduled', 'manual', 'external')),
    scheduled_at          timestamptz,
    started_at            timestamptz NOT NULL,
    finished_at           timestamptz NOT NULL,
    success               boolean     NOT NULL,
    status_code           integer     CHECK (status_code BETWEEN 100 AND 599),
    response_time_ms      double precision CHECK (response_time_ms BETWEEN 0 AND 86400000),
    dns_ms                double precision CHECK (dns_ms BETWEEN 0 AND 86400000),
    connect_ms            double precision CHECK (connect_ms BETWEEN 0 AND 86400000),
    tls_ms                double precision CHECK (tls_ms BETWEEN 0 AND 86400000),
    ttfb_ms               double precision CHECK (ttfb_ms BETWEEN 0 AND 86400000),
    download_ms           double precision CHECK (download_ms BETWEEN 0 AND 86400000),
    total_ms              double precision CHECK (total_ms BETWEEN 0 AND 86400000),
    bytes_read            bigint      CHECK (bytes_read >= 0),
    body_truncated        boolean     NOT NULL DEFAULT false,
    redirects             integer     CHECK (redirects >= 0),
    final_url             text        CHECK (char_length(final_url) <= 4096),
    tls_cert_expires_at   timestamptz,
    error_class           text
        CHECK (error_class IN ('timeout', 'dns', 'connect', 'tls', 'http_status', 'assertion',
                               'redirect', 'body', 'blocked', 'internal')),
    error_message         text        CHECK (char_length(error_message) <= 2000),
    performance_score     integer     CHECK (performance_score BETWEEN 0 AND 100),
    accessibility_score   integer     CHECK (accessibility_score BETWEEN 0 AND 100),
    best_practices_score  integer     CHECK (best_practices_score BETWEEN 0 AND 100),
    seo_score             integer     CHECK (seo_score BETWEEN 0 AND 100),
    lcp_ms                double precision CHECK (lcp_ms BETWEEN 0 AND 86400000),
    inp_ms                double precision CHECK (inp_ms BETWEEN 0 AND 86400000),
    cls                   double precision CHECK (cls BETWEEN 0 AND 1000),
    fcp_ms                double precision CHECK (fcp_ms BETWEEN 0 AND 86400000),
    ttfb_web_ms           double precision CHECK (ttfb_web_ms BETWEEN 0 AND 86400000),

    CONSTRAINT checks_monitor_fkey FOREIGN KEY (monitor_id, team_id)
        REFERENCES monitors (id, team_id) ON DELETE CASCADE,
    CONSTRAINT checks_finished_after_start CHECK (finished_at >= started_at),
    CONSTRAINT checks_failure_has_class CHECK (success = (error_class IS NULL))
);

-- "Latest checks of a monitor", newest first, with keyset paging on id.
CREATE INDEX checks_monitor_id_idx ON checks (monitor_id, id DESC);
-- Time-based retention deletes the oldest checks first.
CREATE INDEX checks_started_at_idx ON checks USING brin (started_at);

COMMENT ON TABLE checks IS
    'One row per executed check: outcome, timing breakdown (milliseconds), error class, and web-performance metrics. Deleted with its monitor.';
COMMENT ON COLUMN checks.trigger IS 'scheduled (by the worker), manual (test_monitor), or external (results ingested from an outside runner).';
COMMENT ON COLUMN checks.scheduled_at IS 'The slot a scheduled check was due at; started_at - scheduled_at is its lateness.';
COMMENT ON COLUMN checks.status_code IS 'HTTP status of the final response; NULL when no response arrived.';
COMMENT ON COLUMN checks.response_time_ms IS 'Time to the complete response, redirects included (same as total_ms for HTTP checks).';
COMMENT ON COLUMN checks.dns_ms IS 'Timing breakdown in milliseconds, summed over redirect hops: dns_ms, connect_ms, tls_ms, ttfb_ms (request sent to response head), download_ms (body), total_ms (wall clock of the whole check).';
COMMENT ON COLUMN checks.final_url IS 'URL of the last response after redirects, with credentials and secret query values redacted.';
COMMENT ON COLUMN checks.bytes_read IS 'Body bytes read from the network; reading stops at a fixed cap (body_truncated).';
COMMENT ON COLUMN checks.error_class IS 'Why a check failed: timeout, dns, connect, tls, http_status, assertion, redirect, body, blocked (target address refused by policy), internal (a fault of the checker itself).';
COMMENT ON COLUMN checks.performance_score IS 'Lighthouse category scores (0-100): performance_score, accessibility_score, best_practices_score, seo_score.';
COMMENT ON COLUMN checks.lcp_ms IS 'Core Web Vitals: lcp_ms, inp_ms, cls (unitless), fcp_ms, ttfb_web_ms.';

CREATE TABLE events (
    uuid          uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    event         text        NOT NULL CHECK (char_length(event) BETWEEN 1 AND 200),
    distinct_id   text        NOT NULL CHECK (char_length(distinct_id) BETWEEN 1 AND 200),
    team_id       bigint      NOT NULL CHECK (team_id > 0),
    "timestamp"   timestamptz NOT NULL DEFAULT now(),
    properties    jsonb       NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(properties) = 'object')
);

-- Time-ordered ids (UUID version 7): check events are appended at the right
-- edge of the primary key instead of landing on random pages.
CREATE FUNCTION _uuid_v7(at timestamptz) RETURNS uuid
LANGUAGE sql VOLATILE PARALLEL SAFE
AS $$
    SELECT encode(
        set_byte(
            overlay(uuid_send(gen_random_uuid())
                    PLACING substring(int8send(floor(extract(epoch FROM at) * 1000)::bigint) FROM 3) FROM 1 FOR 6),
            6, (get_byte(uuid_send(gen_random_uuid()), 6) & 15) | 112),
        'hex')::uuid
$$;

CREATE INDEX events_team_timestamp_idx ON events (team_id, "timestamp");

COMMENT ON TABLE events IS
    'Analytics event rows in the shape PostHog capture accepts: synthetic_http_check and synthetic_web_score per check (distinct_id monitor_<uuid>), and user actions such as "synthetic monitor created" (distinct_id = the acting user). Kept when a monitor is deleted.';

CREATE TABLE outbox (
    id                bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    team_id           bigint      NOT NULL CHECK (team_id > 0),
    monitor_id        uuid,
    kind              text        NOT NULL CHECK (kind IN ('failure', 'reminder', 'recovery')),
    channel           text        NOT NULL CHECK (channel IN ('email', 'slack', 'webhook')),
    destination       text        NOT NULL CHECK (char_length(destination) BETWEEN 1 AND 2048),
    payload           jsonb       NOT NULL CHECK (jsonb_typeof(payload) = 'object'),
    idempotency_key   uuid        NOT NULL UNIQUE DEFAULT gen_random_uuid(),
    state             text        NOT NULL DEFAULT 'pending'
        CHECK (state IN ('pending', 'delivering', 'delivered', 'dead')),
    attempts          integer     NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    next_attempt_at   timestamptz NOT NULL DEFAULT now(),
    last_error        text        CHECK (char_length(last_error) <= 2000),
    created_at        timestamptz NOT NULL DEFAULT now(),
    claimed_at        timestamptz,
    delivered_at      timestamptz,
    CONSTRAINT outbox_monitor_fkey FOREIGN KEY (monitor_id, team_id)
        REFERENCES monitors (id, team_id) ON DELETE SET NULL (monitor_id),
    CONSTRAINT outbox_delivered_has_time CHECK ((state = 'delivered') = (delivered_at IS NOT NULL)),
    CONSTRAINT outbox_destination_fits_channel CHECK (CASE channel
        WHEN 'email' THEN destination ~ '^[^@[:space:][:cntrl:]<>,]+@[^@[:space:][:cntrl:]<>,]+\.[^@[:space:][:cntrl:]<>,]+$'
        WHEN 'webhook' THEN destination ~ '^https?://[^/?#[:space:]]+(/[^[:space:]]*)?$'
        ELSE destination ~ '^(https?://[^/?#[:space:]]+(/[^[:space:]]*)?|#?[A-Za-z0-9._-]{1,80})$' END)
);

-- The dispatcher's claim: due pending rows.
CREATE INDEX outbox_due_idx ON outbox (next_attempt_at) WHERE state = 'pending';
CREATE INDEX outbox_monitor_idx ON outbox (team_id, monitor_id, id DESC);

COMMENT ON TABLE outbox IS
    'Alert notifications, one row per destination, written in the same transaction as the check that triggered them and delivered by the worker: pending -> delivering -> delivered, or retried with backoff, or dead after the last attempt (kept with last_error). idempotency_key is the Message-ID of an email and the Idempotency-Key header of a webhook, so a redelivery after a crash can be recognised.';
