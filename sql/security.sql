-- Least privilege. PUBLIC gets nothing; the application's database user is
-- made a member of synthetic_monitoring_app, which may call the API functions
-- and nothing else. The API functions run as the extension's owner (SECURITY
-- DEFINER, with a fixed search_path) and scope every row by team_id.

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'synthetic_monitoring_app') THEN
        CREATE ROLE synthetic_monitoring_app NOLOGIN;
    END IF;
END $$;
COMMENT ON ROLE synthetic_monitoring_app IS
    'May call the synthetic_monitoring API functions and nothing else: GRANT synthetic_monitoring_app TO the application''s database user.';

REVOKE ALL ON SCHEMA synthetic_monitoring FROM PUBLIC;
REVOKE ALL ON ALL TABLES IN SCHEMA synthetic_monitoring FROM PUBLIC;
REVOKE ALL ON ALL SEQUENCES IN SCHEMA synthetic_monitoring FROM PUBLIC;
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA synthetic_monitoring FROM PUBLIC;

GRANT USAGE ON SCHEMA synthetic_monitoring TO synthetic_monitoring_app;

DO $$
DECLARE
    api regprocedure;
BEGIN
    FOREACH api IN ARRAY ARRAY[
        'create_monitor(bigint, jsonb, text)', 'update_monitor(bigint, uuid, jsonb, text)',
        'delete_monitor(bigint, uuid, text)', 'get_monitor(bigint, uuid, integer)',
        'list_monitors(bigint, text, text, boolean, text, integer, integer)',
        'pause_monitor(bigint, uuid, text)', 'resume_monitor(bigint, uuid, text)',
        'monitor_checks(bigint, uuid, integer, bigint)', 'test_monitor(bigint, uuid)',
        'worker_status()', 'alert_outbox(bigint, uuid, text, integer)', 'retry_alert(bigint, bigint)'
    ]::regprocedure[]
    LOOP
        EXECUTE format('ALTER FUNCTION %s SECURITY DEFINER', api);
        EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO synthetic_monitoring_app', api);
    END LOOP;
END $$;
