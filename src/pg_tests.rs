//! `#[pg_test]` tests of the SQL API, its validation and the table constraints.
//! Each test runs in a transaction that is rolled back afterwards.

#[pgrx::pg_schema]
mod tests {
    use pgrx::prelude::*;
    use pgrx::JsonB;
    use serde_json::{json, Value};

    pgrx::extension_sql!(
        r#"
        -- Runs a statement and returns its error (sqlstate, message, hint) as JSON,
        -- or NULL when it succeeded. The statement's effects are rolled back on error.
        CREATE FUNCTION tests.try_sql(statement text) RETURNS jsonb LANGUAGE plpgsql AS $fn$
        DECLARE
            state text; msg text; hint text;
        BEGIN
            EXECUTE statement;
            RETURN NULL;
        EXCEPTION WHEN OTHERS THEN
            GET STACKED DIAGNOSTICS state = RETURNED_SQLSTATE, msg = MESSAGE_TEXT, hint = PG_EXCEPTION_HINT;
            RETURN jsonb_build_object('sqlstate', state, 'message', msg, 'hint', hint);
        END $fn$;
        "#,
        name = "try_sql"
    );

    const TEAM: i64 = 1;
    const OTHER_TEAM: i64 = 2;

    fn quoted(text: &str) -> String {
        format!("'{}'", text.replace('\'', "''"))
    }

    fn value(sql: &str) -> Value {
        Spi::get_one::<JsonB>(sql).expect("query failed").map(|JsonB(v)| v).unwrap_or(Value::Null)
    }

    fn count(sql: &str) -> i64 {
        Spi::get_one::<i64>(sql).expect("query failed").expect("count is never null")
    }

    /// Creates a monitor from `spec` and returns its row as JSON.
    fn create(team: i64, spec: Value) -> Value {
        value(&format!(
            "SELECT to_jsonb(m) FROM synthetic_monitoring.create_monitor({team}, {}::jsonb) m",
            quoted(&spec.to_string())
        ))
    }

    fn create_named(name: &str) -> Value {
        create(TEAM, json!({"name": name, "url": format!("https://{name}.example.com/health")}))
    }

    fn id_of(monitor: &Value) -> String {
        monitor["id"].as_str().expect("monitor id").to_string()
    }

    /// Runs `statement` expecting an error; returns it as JSON.
    fn refusal(statement: &str) -> Value {
        let error = value(&format!("SELECT tests.try_sql({})", quoted(statement)));
        assert!(!error.is_null(), "expected an error from: {statement}");
        error
    }

    fn assert_refused(statement: &str, sqlstate: &str, field: &str) -> Value {
        let error = refusal(statement);
        assert_eq!(error["sqlstate"], json!(sqlstate), "{statement}: {error}");
        let message = error["message"].as_str().unwrap_or_default();
        assert!(message.contains(field), "message should name {field}: {message}");
        assert!(
            !error["hint"].as_str().unwrap_or_default().is_empty() || sqlstate == "23514",
            "an API refusal carries a hint: {error}"
        );
        error
    }

    /// `overrides` on top of a valid spec must be refused naming `field`, and
    /// nothing may be written.
    fn assert_spec_refused(overrides: Value, field: &str) {
        let mut spec = json!({"name": "n", "url": "https://example.com/"});
        if let (Value::Object(base), Value::Object(extra)) = (&mut spec, &overrides) {
            for (key, value) in extra {
                if value == ABSENT {
                    base.remove(key);
                } else {
                    base.insert(key.clone(), value.clone());
                }
            }
        } else {
            spec = overrides;
        }
        let statement =
            format!("SELECT synthetic_monitoring.create_monitor({TEAM}, {}::jsonb, 'alice')", quoted(&spec.to_string()));
        assert_refused(&statement, "22023", field);
        assert_eq!(count("SELECT count(*) FROM synthetic_monitoring.monitors"), 0);
        assert_eq!(count("SELECT count(*) FROM synthetic_monitoring.events"), 0);
    }

    /// Marks a key to remove from the base spec in `assert_spec_refused`.
    const ABSENT: &str = "<absent>";

    fn many_headers(n: usize) -> Value {
        Value::Object((0..n).map(|i| (format!("X-H{i}"), json!("v"))).collect())
    }

    fn insert_checks(monitor_id: &str, n: i64) {
        Spi::run(&format!(
            "INSERT INTO synthetic_monitoring.checks
                 (monitor_id, team_id, region, trigger, started_at, finished_at, success, status_code, response_time_ms)
             SELECT '{monitor_id}', team_id, 'local', 'scheduled', now() - make_interval(secs => {n} - g),
                    now() - make_interval(secs => {n} - g), true, 200, g
             FROM synthetic_monitoring.monitors, generate_series(1, {n}) g WHERE id = '{monitor_id}'"
        ))
        .expect("insert checks");
    }

    // ---- create_monitor -------------------------------------------------------

    #[pg_test]
    fn create_fills_every_default() {
        let m = create(TEAM, json!({"name": "Home page", "url": "https://example.com"}));
        assert_eq!(m["team_id"], json!(TEAM));
        assert_eq!(m["name"], json!("Home page"));
        assert_eq!(m["url"], json!("https://example.com/"));
        assert_eq!(m["monitor_type"], json!("http"));
        assert_eq!(m["method"], json!("GET"));
        assert_eq!(m["headers"], json!({}));
        assert_eq!(m["body"], Value::Null);
        assert_eq!(m["expected_status_codes"], json!(["2xx"]));
        assert_eq!(m["timeout_ms"], json!(30000));
        assert_eq!(m["frequency_minutes"], json!(5));
        assert_eq!(m["follow_redirects"], json!(true));
        assert_eq!(m["max_redirects"], json!(10));
        assert_eq!(m["body_must_contain"], Value::Null);
        assert_eq!(m["body_must_not_contain"], Value::Null);
        assert_eq!(m["max_response_time_ms"], Value::Null);
        assert_eq!(m["regions"], json!(["local"]));
        assert_eq!(m["enabled"], json!(true));
        assert_eq!(m["state"], json!("pending"));
        assert_eq!(m["consecutive_failures"], json!(0));
        assert_eq!(m["last_checked_at"], Value::Null);
        assert_eq!(m["last_alerted_at"], Value::Null);
        assert_eq!(m["alert_enabled"], json!(true));
        assert_eq!(m["alert_threshold_failures"], json!(3));
        assert_eq!(m["alert_recipients"], json!([]));
        assert_eq!(m["slack_channel"], Value::Null);
        assert_eq!(m["slack_webhook_url"], Value::Null);
        assert_eq!(m["alert_cooldown_minutes"], json!(60));
        assert_eq!(m["created_by"], Value::Null);
    }

    #[pg_test]
    fn create_is_due_at_once() {
        let m = create_named("due");
        let due_now = count(&format!(
            "SELECT count(*) FROM synthetic_monitoring.monitors WHERE id = '{}' AND next_check_at = now() AND created_at = now()",
            id_of(&m)
        ));
        assert_eq!(due_now, 1);
    }

    #[pg_test]
    fn create_keeps_a_full_spec() {
        let spec = json!({
            "name": "Checkout API", "monitor_type": "http", "url": "http://api.example.com:8080/v1/health?x=1",
            "method": "post", "headers": {"X-Probe": "yes", "Content-Type": "application/json"},
            "body": "{\"ping\":true}", "expected_status_codes": ["2xx", 418], "timeout_ms": 5000,
            "frequency_minutes": 1, "follow_redirects": false, "max_redirects": 0,
            "body_must_contain": "ok", "body_must_not_contain": "error", "max_response_time_ms": 2000,
            "regions": ["us-east-1", "eu-west-1"], "enabled": true, "alert_enabled": false,
            "alert_threshold_failures": 5, "alert_recipients": ["oncall@example.com", "ONCALL@example.com", "b@example.org"],
            "slack_channel": "#alerts", "slack_webhook_url": "https://hooks.slack.com/services/T/B/X",
            "alert_cooldown_minutes": 15
        });
        let m = create(TEAM, spec);
        assert_eq!(m["method"], json!("POST"));
        assert_eq!(m["headers"], json!({"X-Probe": "yes", "Content-Type": "application/json"}));
        assert_eq!(m["body"], json!("{\"ping\":true}"));
        assert_eq!(m["expected_status_codes"], json!(["2xx", "418"]));
        assert_eq!(m["timeout_ms"], json!(5000));
        assert_eq!(m["frequency_minutes"], json!(1));
        assert_eq!(m["follow_redirects"], json!(false));
        assert_eq!(m["max_redirects"], json!(0));
        assert_eq!(m["body_must_contain"], json!("ok"));
        assert_eq!(m["body_must_not_contain"], json!("error"));
        assert_eq!(m["max_response_time_ms"], json!(2000));
        assert_eq!(m["regions"], json!(["us-east-1", "eu-west-1"]));
        assert_eq!(m["alert_enabled"], json!(false));
        assert_eq!(m["alert_threshold_failures"], json!(5));
        assert_eq!(m["alert_recipients"], json!(["oncall@example.com", "b@example.org"]));
        assert_eq!(m["slack_channel"], json!("#alerts"));
        assert_eq!(m["alert_cooldown_minutes"], json!(15));
    }

    #[pg_test]
    fn create_disabled_is_not_scheduled() {
        let m = create(TEAM, json!({"name": "off", "url": "https://example.com", "enabled": false}));
        assert_eq!(m["state"], json!("disabled"));
        assert_eq!(m["next_check_at"], Value::Null);
    }

    #[pg_test]
    fn create_tracks_the_acting_user() {
        let m = value(
            "SELECT to_jsonb(m) FROM synthetic_monitoring.create_monitor(1,
                 '{\"name\": \"n\", \"url\": \"https://u:hunter2@example.com/?token=abc\"}', 'user-42') m",
        );
        assert_eq!(m["created_by"], json!("user-42"));
        let event = value("SELECT to_jsonb(e) FROM synthetic_monitoring.events e");
        assert_eq!(event["event"], json!("synthetic monitor created"));
        assert_eq!(event["distinct_id"], json!("user-42"));
        assert_eq!(event["team_id"], json!(TEAM));
        assert_eq!(event["properties"]["monitor_id"], m["id"]);
        assert_eq!(event["properties"]["monitor_name"], json!("n"));
        assert_eq!(event["properties"]["url"], json!("https://***@example.com/?token=***"));
        assert!(!event.to_string().contains("hunter2"));
    }

    #[pg_test]
    fn create_without_user_records_no_event() {
        create_named("quiet");
        assert_eq!(count("SELECT count(*) FROM synthetic_monitoring.events"), 0);
    }

    // ---- update_monitor -------------------------------------------------------

    #[pg_test]
    fn update_patches_only_given_fields() {
        let m = create(TEAM, json!({"name": "a", "url": "https://a.example.com", "frequency_minutes": 10}));
        Spi::run(&format!(
            "UPDATE synthetic_monitoring.monitors SET next_check_at = now() + interval '5 min', updated_at = now() - interval '1 hour' WHERE id = '{}'",
            id_of(&m)
        ))
        .unwrap();
        let u = value(&format!(
            "SELECT to_jsonb(m) FROM synthetic_monitoring.update_monitor({TEAM}, '{}', '{{\"name\": \"renamed\"}}', 'bob') m",
            id_of(&m)
        ));
        assert_eq!(u["name"], json!("renamed"));
        assert_eq!(u["url"], json!("https://a.example.com/"));
        assert_eq!(u["frequency_minutes"], json!(10));
        let unchanged_schedule = count(&format!(
            "SELECT count(*) FROM synthetic_monitoring.monitors WHERE id = '{}' AND next_check_at = now() + interval '5 min' AND updated_at = now()",
            id_of(&m)
        ));
        assert_eq!(unchanged_schedule, 1, "a rename keeps the schedule and bumps updated_at");
        let event = value("SELECT to_jsonb(e) FROM synthetic_monitoring.events e WHERE event = 'synthetic monitor updated'");
        assert_eq!(event["distinct_id"], json!("bob"));
        assert_eq!(event["properties"]["updated_fields"], json!(["name"]));
    }

    #[pg_test]
    fn update_of_the_target_is_due_at_once() {
        let m = create_named("retarget");
        let id = id_of(&m);
        Spi::run(&format!("UPDATE synthetic_monitoring.monitors SET next_check_at = now() + interval '4 min' WHERE id = '{id}'")).unwrap();
        Spi::run(&format!(
            "SELECT synthetic_monitoring.update_monitor({TEAM}, '{id}', '{{\"url\": \"https://new.example.com\"}}')"
        ))
        .unwrap();
        assert_eq!(count(&format!("SELECT count(*) FROM synthetic_monitoring.monitors WHERE id = '{id}' AND next_check_at = now()")), 1);
    }

    #[pg_test]
    fn update_with_full_spec_works_as_put() {
        let m = create(TEAM, json!({"name": "a", "url": "https://a.example.com", "body_must_contain": "ok"}));
        let spec = json!({"name": "b", "url": "https://b.example.com", "body_must_contain": null, "method": "HEAD"});
        let u = value(&format!(
            "SELECT to_jsonb(m) FROM synthetic_monitoring.update_monitor({TEAM}, '{}', {}) m",
            id_of(&m),
            quoted(&spec.to_string())
        ));
        assert_eq!(u["name"], json!("b"));
        assert_eq!(u["body_must_contain"], Value::Null);
        assert_eq!(u["method"], json!("HEAD"));
    }

    #[pg_test]
    fn update_revalidates_the_whole_monitor() {
        let m = create(TEAM, json!({"name": "a", "url": "https://a.example.com", "frequency_minutes": 1, "timeout_ms": 30000}));
        let id = id_of(&m);
        // Each field alone is valid; together the timeout is not below the interval.
        assert_refused(
            &format!("SELECT synthetic_monitoring.update_monitor({TEAM}, '{id}', '{{\"timeout_ms\": 60000}}')"),
            "22023",
            "timeout_ms",
        );
        let after = value(&format!("SELECT to_jsonb(m) FROM synthetic_monitoring.monitors m WHERE id = '{id}'"));
        assert_eq!(after, m, "a refused update changes nothing");
    }

    #[pg_test]
    fn update_enabled_false_pauses() {
        let m = create_named("toggle");
        let u = value(&format!(
            "SELECT to_jsonb(m) FROM synthetic_monitoring.update_monitor({TEAM}, '{}', '{{\"enabled\": false}}') m",
            id_of(&m)
        ));
        assert_eq!(u["state"], json!("disabled"));
        assert_eq!(u["next_check_at"], Value::Null);
    }

    #[pg_test]
    fn update_refuses_read_only_fields() {
        let m = create_named("ro");
        assert_refused(
            &format!("SELECT synthetic_monitoring.update_monitor({TEAM}, '{}', '{{\"state\": \"healthy\"}}')", id_of(&m)),
            "22023",
            "state",
        );
    }

    // ---- delete_monitor -------------------------------------------------------

    #[pg_test]
    fn delete_removes_monitor_and_checks_keeps_events() {
        let m = create(TEAM, json!({"name": "gone", "url": "https://example.com"}));
        let id = id_of(&m);
        insert_checks(&id, 3);
        let deleted = Spi::get_one::<bool>(&format!("SELECT synthetic_monitoring.delete_monitor({TEAM}, '{id}', 'carol')"))
            .unwrap()
            .unwrap();
        assert!(deleted);
        assert_eq!(count(&format!("SELECT count(*) FROM synthetic_monitoring.monitors WHERE id = '{id}'")), 0);
        assert_eq!(count(&format!("SELECT count(*) FROM synthetic_monitoring.checks WHERE monitor_id = '{id}'")), 0);
        assert_eq!(
            count("SELECT count(*) FROM synthetic_monitoring.events WHERE event = 'synthetic monitor deleted' AND distinct_id = 'carol'"),
            1
        );
        assert_refused(&format!("SELECT synthetic_monitoring.delete_monitor({TEAM}, '{id}')"), "P0002", &id);
    }

    // ---- get_monitor ----------------------------------------------------------

    #[pg_test]
    fn get_includes_recent_checks_newest_first() {
        let m = create_named("detail");
        let id = id_of(&m);
        insert_checks(&id, 15);
        let got = value(&format!("SELECT synthetic_monitoring.get_monitor({TEAM}, '{id}')"));
        assert_eq!(got["id"], m["id"]);
        assert_eq!(got["name"], json!("detail"));
        let recent = got["recent_checks"].as_array().unwrap();
        assert_eq!(recent.len(), 10);
        let ids: Vec<i64> = recent.iter().map(|c| c["id"].as_i64().unwrap()).collect();
        assert!(ids.windows(2).all(|w| w[0] > w[1]), "newest first: {ids:?}");
        assert_eq!(recent[0]["response_time_ms"].as_f64(), Some(15.0));
        let three = value(&format!("SELECT synthetic_monitoring.get_monitor({TEAM}, '{id}', 3)"));
        assert_eq!(three["recent_checks"].as_array().unwrap().len(), 3);
    }

    #[pg_test]
    fn get_without_checks_has_empty_list() {
        let m = create_named("fresh");
        let got = value(&format!("SELECT synthetic_monitoring.get_monitor({TEAM}, '{}')", id_of(&m)));
        assert_eq!(got["recent_checks"], json!([]));
    }

    // ---- list_monitors --------------------------------------------------------

    fn listed(args: &str) -> Vec<String> {
        let rows = value(&format!(
            "SELECT coalesce(jsonb_agg(m.name ORDER BY ordinality), '[]') FROM synthetic_monitoring.list_monitors({args}) WITH ORDINALITY m"
        ));
        rows.as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_string()).collect()
    }

    fn seed_list() {
        for (i, name) in ["Alpha shop", "beta API", "Gamma"].iter().enumerate() {
            let m = create(TEAM, json!({"name": name, "url": format!("https://site{i}.example.com/")}));
            Spi::run(&format!(
                "UPDATE synthetic_monitoring.monitors SET created_at = now() - make_interval(mins => {}) WHERE id = '{}'",
                10 - i,
                id_of(&m)
            ))
            .unwrap();
        }
        create(OTHER_TEAM, json!({"name": "Alpha other team", "url": "https://other.example.com"}));
        Spi::run("UPDATE synthetic_monitoring.monitors SET state = 'healthy' WHERE name = 'beta API'").unwrap();
        Spi::run(
            "UPDATE synthetic_monitoring.monitors SET monitor_type = 'web_performance', enabled = false, state = 'disabled', next_check_at = NULL WHERE name = 'Gamma'",
        )
        .unwrap();
    }

    #[pg_test]
    fn list_is_newest_first_and_team_scoped() {
        seed_list();
        assert_eq!(listed("1"), vec!["Gamma", "beta API", "Alpha shop"]);
        assert_eq!(listed("2"), vec!["Alpha other team"]);
        assert_eq!(listed("3"), Vec::<String>::new());
    }

    #[pg_test]
    fn list_filters_combine() {
        seed_list();
        assert_eq!(listed("1, state => 'healthy'"), vec!["beta API"]);
        assert_eq!(listed("1, monitor_type => 'web_performance'"), vec!["Gamma"]);
        assert_eq!(listed("1, enabled => true"), vec!["beta API", "Alpha shop"]);
        assert_eq!(listed("1, search => 'ALPHA'"), vec!["Alpha shop"]);
        assert_eq!(listed("1, search => 'SITE1.example'"), vec!["beta API"]);
        assert_eq!(listed("1, search => '%'"), Vec::<String>::new(), "search is literal text, not a pattern");
        assert_eq!(listed("1, enabled => true, search => 'gamma'"), Vec::<String>::new());
    }

    #[pg_test]
    fn list_pages_with_limit_and_offset() {
        seed_list();
        assert_eq!(listed("1, \"limit\" => 2"), vec!["Gamma", "beta API"]);
        assert_eq!(listed("1, \"limit\" => 2, \"offset\" => 2"), vec!["Alpha shop"]);
    }

    // ---- pause_monitor / resume_monitor ---------------------------------------

    #[pg_test]
    fn pause_and_resume() {
        let m = create_named("pausable");
        let id = id_of(&m);
        let paused = value(&format!("SELECT to_jsonb(m) FROM synthetic_monitoring.pause_monitor({TEAM}, '{id}', 'dan') m"));
        assert_eq!(paused["state"], json!("disabled"));
        assert_eq!(paused["enabled"], json!(false));
        assert_eq!(paused["next_check_at"], Value::Null);
        let again = value(&format!("SELECT to_jsonb(m) FROM synthetic_monitoring.pause_monitor({TEAM}, '{id}', 'dan') m"));
        assert_eq!(again, paused, "pausing twice changes nothing");
        Spi::run(&format!("UPDATE synthetic_monitoring.monitors SET consecutive_failures = 0 WHERE id = '{id}'")).unwrap();
        let resumed = value(&format!("SELECT to_jsonb(m) FROM synthetic_monitoring.resume_monitor({TEAM}, '{id}', 'dan') m"));
        assert_eq!(resumed["state"], json!("pending"));
        assert_eq!(resumed["enabled"], json!(true));
        assert_eq!(count(&format!("SELECT count(*) FROM synthetic_monitoring.monitors WHERE id = '{id}' AND next_check_at = now()")), 1);
        Spi::run(&format!("SELECT synthetic_monitoring.resume_monitor({TEAM}, '{id}', 'dan')")).unwrap();
        assert_eq!(count("SELECT count(*) FROM synthetic_monitoring.events WHERE event = 'synthetic monitor paused'"), 1);
        assert_eq!(count("SELECT count(*) FROM synthetic_monitoring.events WHERE event = 'synthetic monitor resumed'"), 1);
    }

    // ---- monitor_checks -------------------------------------------------------

    fn check_ids(args: &str) -> Vec<i64> {
        let rows = value(&format!(
            "SELECT coalesce(jsonb_agg(c.id ORDER BY ordinality), '[]') FROM synthetic_monitoring.monitor_checks({args}) WITH ORDINALITY c"
        ));
        rows.as_array().unwrap().iter().map(|v| v.as_i64().unwrap()).collect()
    }

    #[pg_test]
    fn checks_page_by_keyset_stably() {
        let m = create_named("history");
        let id = id_of(&m);
        insert_checks(&id, 25);
        let all = check_ids(&format!("{TEAM}, '{id}', 1000"));
        assert_eq!(all.len(), 25);
        let first = check_ids(&format!("{TEAM}, '{id}', 10"));
        assert_eq!(first, all[..10]);
        // New checks arriving between pages must not shift the next page.
        insert_checks(&id, 5);
        let second = check_ids(&format!("{TEAM}, '{id}', 10, {}", first[9]));
        assert_eq!(second, all[10..20]);
        let third = check_ids(&format!("{TEAM}, '{id}', 10, {}", second[9]));
        assert_eq!(third, all[20..]);
        assert_eq!(check_ids(&format!("{TEAM}, '{id}', 10, {}", all[24])), Vec::<i64>::new());
        assert_eq!(check_ids(&format!("{TEAM}, '{id}'")).len(), 30, "default limit is 50");
    }

    // ---- team isolation -------------------------------------------------------

    #[pg_test]
    fn another_teams_monitor_is_not_found() {
        let m = create_named("private");
        let id = id_of(&m);
        insert_checks(&id, 2);
        let calls = [
            format!("SELECT synthetic_monitoring.get_monitor({OTHER_TEAM}, '{id}')"),
            format!("SELECT synthetic_monitoring.update_monitor({OTHER_TEAM}, '{id}', '{{\"name\": \"x\"}}')"),
            format!("SELECT synthetic_monitoring.delete_monitor({OTHER_TEAM}, '{id}')"),
            format!("SELECT synthetic_monitoring.pause_monitor({OTHER_TEAM}, '{id}')"),
            format!("SELECT synthetic_monitoring.resume_monitor({OTHER_TEAM}, '{id}')"),
            format!("SELECT * FROM synthetic_monitoring.monitor_checks({OTHER_TEAM}, '{id}')"),
        ];
        for call in calls {
            let error = assert_refused(&call, "P0002", &id);
            assert!(error["message"].as_str().unwrap().contains("not found"));
        }
        let after = value(&format!("SELECT to_jsonb(m) FROM synthetic_monitoring.monitors m WHERE id = '{id}'"));
        assert_eq!(after, m, "nothing changed");
        assert_eq!(listed(&OTHER_TEAM.to_string()), Vec::<String>::new());
    }

    #[pg_test]
    fn missing_monitor_is_p0002() {
        let missing = "00000000-0000-4000-8000-000000000000";
        assert_refused(&format!("SELECT synthetic_monitoring.get_monitor({TEAM}, '{missing}')"), "P0002", missing);
        assert_refused(&format!("SELECT synthetic_monitoring.pause_monitor({TEAM}, NULL)"), "P0002", "null");
    }

    // ---- argument validation --------------------------------------------------

    #[pg_test]
    fn team_id_must_be_positive() {
        assert_refused("SELECT synthetic_monitoring.create_monitor(0, '{\"name\":\"n\",\"url\":\"http://a.b\"}')", "22023", "team_id");
        assert_refused("SELECT synthetic_monitoring.list_monitors(NULL)", "22023", "team_id");
    }

    #[pg_test]
    fn acting_user_must_not_be_empty() {
        assert_refused("SELECT synthetic_monitoring.create_monitor(1, '{\"name\":\"n\",\"url\":\"http://a.b\"}', '')", "22023", "acting_user");
    }

    #[pg_test]
    fn list_refuses_bad_filters_and_paging() {
        assert_refused("SELECT synthetic_monitoring.list_monitors(1, state => 'broken')", "22023", "state");
        assert_refused("SELECT synthetic_monitoring.list_monitors(1, monitor_type => 'ftp')", "22023", "monitor_type");
        assert_refused("SELECT synthetic_monitoring.list_monitors(1, \"limit\" => 0)", "22023", "limit");
        assert_refused("SELECT synthetic_monitoring.list_monitors(1, \"limit\" => 1001)", "22023", "limit");
        assert_refused("SELECT synthetic_monitoring.list_monitors(1, \"offset\" => -1)", "22023", "offset");
    }

    #[pg_test]
    fn history_and_detail_refuse_bad_limits() {
        let m = create_named("limits");
        let id = id_of(&m);
        assert_refused(&format!("SELECT synthetic_monitoring.monitor_checks({TEAM}, '{id}', 0)"), "22023", "limit");
        assert_refused(&format!("SELECT synthetic_monitoring.get_monitor({TEAM}, '{id}', 101)"), "22023", "recent_checks");
    }

    #[pg_test]
    fn spec_must_be_an_object() {
        assert_spec_refused(json!(["name", "url"]), "spec");
        assert_refused("SELECT synthetic_monitoring.create_monitor(1, NULL)", "22023", "spec");
    }

    /// One test per validation rule: the spec change, and the field the error names.
    macro_rules! spec_refusals {
        ($($test:ident: $overrides:expr => $field:literal;)*) => {$(
            #[pg_test]
            fn $test() {
                assert_spec_refused($overrides, $field);
            }
        )*};
    }

    spec_refusals! {
        refuses_unknown_field: json!({"frequency": 5}) => "frequency";
        refuses_read_only_field: json!({"consecutive_failures": 0}) => "consecutive_failures";
        refuses_missing_name: json!({"name": ABSENT}) => "name";
        refuses_missing_url: json!({"url": ABSENT}) => "url";
        refuses_blank_name: json!({"name": "   "}) => "name";
        refuses_long_name: json!({"name": "x".repeat(401)}) => "name";
        refuses_non_text_name: json!({"name": 7}) => "name";
        refuses_unknown_monitor_type: json!({"monitor_type": "tcp"}) => "monitor_type";
        refuses_ftp_url: json!({"url": "ftp://example.com/file"}) => "url";
        refuses_relative_url: json!({"url": "/health"}) => "url";
        refuses_url_without_host: json!({"url": "http://"}) => "url";
        refuses_url_with_spaces: json!({"url": "https://exa mple.com"}) => "url";
        refuses_long_url: json!({"url": format!("https://example.com/{}", "a".repeat(2048))}) => "url";
        refuses_port_zero: json!({"url": "http://example.com:0/"}) => "url";
        refuses_unknown_method: json!({"method": "TRACE"}) => "method";
        refuses_headers_not_object: json!({"headers": ["Accept: */*"]}) => "headers";
        refuses_bad_header_name: json!({"headers": {"Bad Header": "x"}}) => "headers";
        refuses_non_text_header_value: json!({"headers": {"X-Count": 3}}) => "headers";
        refuses_header_injection: json!({"headers": {"X-A": "a\r\nX-B: b"}}) => "headers";
        refuses_reserved_header: json!({"headers": {"Content-Length": "10"}}) => "headers";
        refuses_duplicate_header: json!({"headers": {"X-A": "1", "x-a": "2"}}) => "headers";
        refuses_too_many_headers: json!({"headers": many_headers(51)}) => "headers";
        refuses_long_body: json!({"method": "POST", "body": "b".repeat(65537)}) => "body";
        refuses_non_text_body: json!({"method": "POST", "body": {"a": 1}}) => "body";
        refuses_body_with_head: json!({"method": "HEAD", "body": "x"}) => "body";
        refuses_empty_status_list: json!({"expected_status_codes": []}) => "expected_status_codes";
        refuses_status_600: json!({"expected_status_codes": [600]}) => "expected_status_codes";
        refuses_status_class_6xx: json!({"expected_status_codes": ["6xx"]}) => "expected_status_codes";
        refuses_status_not_array: json!({"expected_status_codes": "2xx"}) => "expected_status_codes";
        refuses_timeout_below_minimum: json!({"timeout_ms": 99}) => "timeout_ms";
        refuses_timeout_above_maximum: json!({"timeout_ms": 300001, "frequency_minutes": 60}) => "timeout_ms";
        refuses_fractional_timeout: json!({"timeout_ms": 1500.5}) => "timeout_ms";
        refuses_text_timeout: json!({"timeout_ms": "30s"}) => "timeout_ms";
        refuses_timeout_not_below_interval: json!({"timeout_ms": 60000, "frequency_minutes": 1}) => "timeout_ms";
        refuses_frequency_zero: json!({"frequency_minutes": 0}) => "frequency_minutes";
        refuses_frequency_above_hour: json!({"frequency_minutes": 61}) => "frequency_minutes";
        refuses_null_frequency: json!({"frequency_minutes": null}) => "frequency_minutes";
        refuses_non_boolean_follow_redirects: json!({"follow_redirects": "yes"}) => "follow_redirects";
        refuses_too_many_redirects: json!({"max_redirects": 21}) => "max_redirects";
        refuses_empty_body_assertion: json!({"body_must_contain": ""}) => "body_must_contain";
        refuses_long_negative_assertion: json!({"body_must_not_contain": "x".repeat(1001)}) => "body_must_not_contain";
        refuses_max_response_time_above_timeout: json!({"timeout_ms": 1000, "max_response_time_ms": 1001}) => "max_response_time_ms";
        refuses_empty_regions: json!({"regions": []}) => "regions";
        refuses_bad_region_name: json!({"regions": ["US East"]}) => "regions";
        refuses_regions_not_array: json!({"regions": "local"}) => "regions";
        refuses_non_boolean_enabled: json!({"enabled": 1}) => "enabled";
        refuses_non_boolean_alert_enabled: json!({"alert_enabled": null}) => "alert_enabled";
        refuses_alert_threshold_zero: json!({"alert_threshold_failures": 0}) => "alert_threshold_failures";
        refuses_invalid_recipient: json!({"alert_recipients": ["not-an-email"]}) => "alert_recipients";
        refuses_recipient_without_domain_dot: json!({"alert_recipients": ["ops@localhost"]}) => "alert_recipients";
        refuses_too_many_recipients: json!({"alert_recipients": (0..51).map(|i| format!("u{i}@example.com")).collect::<Vec<_>>()}) => "alert_recipients";
        refuses_recipients_not_array: json!({"alert_recipients": "ops@example.com"}) => "alert_recipients";
        refuses_bad_slack_channel: json!({"slack_channel": "#has space"}) => "slack_channel";
        refuses_bad_slack_webhook_url: json!({"slack_webhook_url": "hooks.slack.com/services/x"}) => "slack_webhook_url";
        refuses_cooldown_zero: json!({"alert_cooldown_minutes": 0}) => "alert_cooldown_minutes";
        refuses_web_performance_post: json!({"monitor_type": "web_performance", "method": "POST"}) => "method";
    }

    #[pg_test]
    fn refusal_hint_lists_allowed_values() {
        let error = refusal("SELECT synthetic_monitoring.create_monitor(1, '{\"name\":\"n\",\"url\":\"http://a.b\",\"method\":\"TRACE\"}')");
        assert_eq!(error["message"], json!("invalid method: \"TRACE\" is not allowed"));
        assert_eq!(error["hint"], json!("one of: GET, HEAD, POST, PUT, PATCH, DELETE"));
        let unknown = refusal("SELECT synthetic_monitoring.create_monitor(1, '{\"name\":\"n\",\"url\":\"http://a.b\",\"nmae\":\"x\"}')");
        assert!(unknown["hint"].as_str().unwrap().contains("frequency_minutes"), "{unknown}");
    }

    // ---- table constraints against direct writes --------------------------------

    /// A direct INSERT of a valid monitor with one column replaced by `column = value`.
    fn direct_insert(column: &str, value_sql: &str) -> String {
        let mut columns = vec![
            ("team_id", "1"),
            ("name", "'n'"),
            ("url", "'https://example.com/'"),
            ("next_check_at", "now()"),
        ];
        match columns.iter_mut().find(|(c, _)| *c == column) {
            Some(entry) => entry.1 = value_sql,
            None => columns.push((column, value_sql)),
        }
        let names: Vec<&str> = columns.iter().map(|(c, _)| *c).collect();
        let values: Vec<&str> = columns.iter().map(|(_, v)| *v).collect();
        format!("INSERT INTO synthetic_monitoring.monitors ({}) VALUES ({})", names.join(", "), values.join(", "))
    }

    #[pg_test]
    fn direct_insert_of_a_valid_row_works() {
        Spi::run(&direct_insert("method", "'GET'")).unwrap();
        assert_eq!(count("SELECT count(*) FROM synthetic_monitoring.monitors WHERE state = 'pending'"), 1);
    }

    #[pg_test]
    fn constraints_refuse_invalid_direct_writes() {
        let cases = [
            ("team_id", "0"),
            ("name", "'  '"),
            ("monitor_type", "'tcp'"),
            ("url", "'ftp://example.com/'"),
            ("url", "'https://'"),
            ("method", "'TRACE'"),
            ("headers", "'{\"X-A\": 1}'"),
            ("headers", "'[]'"),
            ("expected_status_codes", "'{2xx,600}'"),
            ("expected_status_codes", "'{}'"),
            ("timeout_ms", "300000"),
            ("frequency_minutes", "0"),
            ("max_redirects", "21"),
            ("regions", "'{US East}'"),
            ("regions", "'{}'"),
            ("state", "'broken'"),
            ("state", "'disabled'"),
            ("enabled", "false"),
            ("next_check_at", "NULL"),
            ("consecutive_failures", "-1"),
            ("alert_threshold_failures", "0"),
            ("alert_recipients", "'{not-an-email}'"),
            ("alert_recipients", "'{a@b.co,\"\"}'"),
            ("slack_channel", "'#has space'"),
            ("alert_cooldown_minutes", "0"),
            ("max_response_time_ms", "40000"),
        ];
        for (column, bad) in cases {
            let error = refusal(&direct_insert(column, bad));
            assert_eq!(error["sqlstate"], json!("23514"), "{column} = {bad}: {error}");
        }
        assert_eq!(count("SELECT count(*) FROM synthetic_monitoring.monitors"), 0);
    }

    #[pg_test]
    fn direct_update_is_guarded_too() {
        let m = create_named("guarded");
        let id = id_of(&m);
        for assignment in ["timeout_ms = 400000", "url = 'javascript:alert(1)'", "state = 'disabled'", "method = 'HEAD', body = 'x'"] {
            let error = refusal(&format!("UPDATE synthetic_monitoring.monitors SET {assignment} WHERE id = '{id}'"));
            assert_eq!(error["sqlstate"], json!("23514"), "{assignment}: {error}");
        }
    }

    #[pg_test]
    fn check_constraints_guard_check_rows() {
        let m = create_named("rows");
        let id = id_of(&m);
        let insert = |extra_cols: &str, extra_vals: &str| {
            format!(
                "INSERT INTO synthetic_monitoring.checks (monitor_id, team_id, region, trigger, started_at, finished_at{extra_cols})
                 VALUES ('{id}', 1, 'local', 'scheduled', now(), now(){extra_vals})"
            )
        };
        let cases = [
            insert(", success, error_class", ", false, 'gremlins'"),
            insert(", success, error_class", ", true, 'timeout'"),
            insert(", success", ", false"),
            insert(", success, status_code", ", true, 99"),
            insert(", success, dns_ms", ", true, -1"),
            insert(", success, performance_score", ", true, 101"),
            format!(
                "INSERT INTO synthetic_monitoring.checks (monitor_id, team_id, region, trigger, started_at, finished_at, success)
                 VALUES ('{id}', 1, 'local', 'cron', now(), now(), true)"
            ),
            format!(
                "INSERT INTO synthetic_monitoring.checks (monitor_id, team_id, region, trigger, started_at, finished_at, success)
                 VALUES ('{id}', 1, 'local', 'scheduled', now(), now() - interval '1 s', true)"
            ),
        ];
        for statement in cases {
            let error = refusal(&statement);
            assert_eq!(error["sqlstate"], json!("23514"), "{statement}: {error}");
        }
        Spi::run(&insert(", success, error_class, status_code", ", false, 'http_status', 500")).unwrap();
        assert_eq!(count(&format!("SELECT count(*) FROM synthetic_monitoring.checks WHERE monitor_id = '{id}'")), 1);
    }

    // ---- scheduling, claiming, recording (the worker's SQL) ---------------------

    fn result_json(monitor_id: &str, success: bool, error_class: Option<&str>, status: Option<i32>) -> String {
        json!([{
            "monitor_id": monitor_id, "trigger": "scheduled", "region": "local",
            "scheduled_epoch": null, "started_epoch": 1_800_000_000.0, "finished_epoch": 1_800_000_000.25,
            "success": success, "status_code": status, "dns_ms": 1.5, "connect_ms": 0.5, "tls_ms": 0.0,
            "ttfb_ms": 200.0, "download_ms": 10.0, "total_ms": 250.0, "bytes_read": 1234,
            "body_truncated": false, "redirects": 0, "final_url": "https://***@example.com/",
            "tls_cert_expires_epoch": null, "error_class": error_class,
            "error_message": error_class.map(|c| format!("failed: {c}"))
        }])
        .to_string()
    }

    fn record(monitor_id: &str, success: bool, error_class: Option<&str>, status: Option<i32>) -> Value {
        value(&format!(
            "SELECT coalesce(jsonb_agg(to_jsonb(c)), '[]') FROM synthetic_monitoring._record_checks({}::jsonb) c",
            quoted(&result_json(monitor_id, success, error_class, status))
        ))
    }

    fn monitor_row(id: &str) -> Value {
        value(&format!("SELECT to_jsonb(m) FROM synthetic_monitoring.monitors m WHERE id = '{id}'"))
    }

    #[pg_test]
    fn next_slot_keeps_phase_without_drift() {
        let id = "5f0c6e1e-2b1a-4c3e-9d3a-0a1b2c3d4e5f";
        let gap = |a: &str, b: &str| {
            Spi::get_one::<f64>(&format!("SELECT extract(epoch FROM ({b}) - ({a}))::float8")).unwrap().unwrap()
        };
        let slot = format!("synthetic_monitoring._next_slot('{id}', 5, now())");
        let following = format!("synthetic_monitoring._next_slot('{id}', 5, {slot})");
        assert_eq!(gap(&slot, &following), 300.0, "on time: exactly one interval later");
        let late = format!("synthetic_monitoring._next_slot('{id}', 5, {slot} + interval '2 min')");
        assert_eq!(gap(&slot, &late), 300.0, "a late check keeps the phase");
        let after_downtime = format!("synthetic_monitoring._next_slot('{id}', 5, {slot} + interval '1 hour 1 s')");
        assert_eq!(gap(&slot, &after_downtime), 3900.0, "overdue: the next phase slot after now, no catch-up");
        let ahead = gap("now()", &slot);
        assert!(ahead > 0.0 && ahead <= 300.0, "the first slot lies within one interval: {ahead}");
    }

    #[pg_test]
    fn next_slot_spreads_monitors_over_the_interval() {
        let distinct_seconds = count(
            "SELECT count(DISTINCT floor(extract(epoch FROM synthetic_monitoring._next_slot(gen_random_uuid(), 1, now())))::bigint % 60)
             FROM generate_series(1, 2000)",
        );
        assert!(distinct_seconds >= 58, "2000 monitors should cover nearly every second of the minute: {distinct_seconds}");
    }

    #[pg_test]
    fn claim_takes_each_due_monitor_once() {
        let a = id_of(&create_named("claim-a"));
        let b = id_of(&create_named("claim-b"));
        create(TEAM, json!({"name": "elsewhere", "url": "https://x.example.com", "regions": ["eu-west-1"]}));
        create(TEAM, json!({"name": "paused", "url": "https://y.example.com", "enabled": false}));
        let jobs = value("SELECT jsonb_agg(j ORDER BY j->>'url') FROM synthetic_monitoring._claim_due_checks('local', 10) j");
        let ids: Vec<&str> = jobs.as_array().unwrap().iter().map(|j| j["monitor_id"].as_str().unwrap()).collect();
        assert_eq!(ids.len(), 2, "{jobs}");
        assert!(ids.contains(&a.as_str()) && ids.contains(&b.as_str()));
        assert_eq!(jobs[0]["method"], json!("GET"));
        assert_eq!(jobs[0]["timeout_ms"], json!(30000));
        assert!(jobs[0]["scheduled_at"].as_f64().unwrap() > 1.7e9);
        let claimed = monitor_row(&a);
        assert!(!claimed["in_flight_slot"].is_null());
        assert_eq!(
            count(&format!(
                "SELECT count(*) FROM synthetic_monitoring.monitors WHERE id = '{a}' AND next_check_at > now() AND next_check_at <= now() + interval '5 min'"
            )),
            1
        );
        let again = value("SELECT coalesce(jsonb_agg(j), '[]') FROM synthetic_monitoring._claim_due_checks('local', 10) j");
        assert_eq!(again, json!([]), "a monitor in flight is never claimed twice");
        // Even when its next slot is already due.
        Spi::run(&format!("UPDATE synthetic_monitoring.monitors SET next_check_at = now() - interval '1 s' WHERE id = '{a}'")).unwrap();
        let still = value("SELECT coalesce(jsonb_agg(j), '[]') FROM synthetic_monitoring._claim_due_checks('local', 10) j");
        assert_eq!(still, json!([]));
    }

    #[pg_test]
    fn claim_respects_the_limit_oldest_first() {
        for i in 0..5 {
            let m = create_named(&format!("limit-{i}"));
            Spi::run(&format!(
                "UPDATE synthetic_monitoring.monitors SET next_check_at = now() - make_interval(mins => {i}) WHERE id = '{}'",
                id_of(&m)
            ))
            .unwrap();
        }
        let names = value(
            "SELECT jsonb_agg(m.name ORDER BY m.name) FROM synthetic_monitoring._claim_due_checks('local', 2) j
             JOIN synthetic_monitoring.monitors m ON m.id = (j->>'monitor_id')::uuid",
        );
        assert_eq!(names, json!(["limit-3", "limit-4"]));
    }

    #[pg_test]
    fn interrupted_slots_are_rescheduled_once() {
        let id = id_of(&create_named("interrupted"));
        let first = value("SELECT j FROM synthetic_monitoring._claim_due_checks('local', 10) j");
        let recovered = Spi::get_one::<i32>("SELECT synthetic_monitoring._recover_interrupted_checks('local')").unwrap().unwrap();
        assert_eq!(recovered, 1);
        let row = monitor_row(&id);
        assert!(row["in_flight_slot"].is_null());
        let second = value("SELECT j FROM synthetic_monitoring._claim_due_checks('local', 10) j");
        assert_eq!(second["scheduled_at"], first["scheduled_at"], "the same slot runs again, once");
        record(&id, true, None, Some(200));
        assert_eq!(count(&format!("SELECT count(*) FROM synthetic_monitoring.checks WHERE monitor_id = '{id}'")), 1);
        assert!(monitor_row(&id)["in_flight_slot"].is_null());
    }

    #[pg_test]
    fn recording_moves_state_and_writes_event() {
        let id = id_of(&create_named("states"));
        Spi::run("SELECT synthetic_monitoring._claim_due_checks('local', 10)").unwrap();
        let rows = record(&id, false, Some("http_status"), Some(500));
        assert_eq!(rows[0]["status_code"], json!(500));
        assert_eq!(rows[0]["error_class"], json!("http_status"));
        assert_eq!(rows[0]["response_time_ms"].as_f64(), Some(250.0));
        assert_eq!(rows[0]["dns_ms"].as_f64(), Some(1.5));
        assert_eq!(rows[0]["final_url"], json!("https://***@example.com/"));
        let m = monitor_row(&id);
        assert_eq!(m["state"], json!("failing"));
        assert_eq!(m["consecutive_failures"], json!(1));
        assert!(m["in_flight_slot"].is_null());
        record(&id, false, Some("timeout"), None);
        assert_eq!(monitor_row(&id)["consecutive_failures"], json!(2));
        record(&id, false, Some("internal"), None);
        let m = monitor_row(&id);
        assert_eq!(m["state"], json!("error"), "a fault of the checker is not the target's failure");
        assert_eq!(m["consecutive_failures"], json!(2));
        record(&id, true, None, Some(200));
        let m = monitor_row(&id);
        assert_eq!(m["state"], json!("healthy"));
        assert_eq!(m["consecutive_failures"], json!(0));

        let event = value(&format!(
            "SELECT to_jsonb(e) FROM synthetic_monitoring.events e WHERE event = 'synthetic_http_check' AND properties->>'status_code' = '500'"
        ));
        assert_eq!(event["distinct_id"], json!(format!("monitor_{id}")));
        let p = &event["properties"];
        assert_eq!(p["monitor_id"], json!(id));
        assert_eq!(p["monitor_name"], json!("states"));
        assert_eq!(p["monitor_type"], json!("http"));
        assert_eq!(p["url"], json!("https://states.example.com/health"));
        assert_eq!(p["region"], json!("local"));
        assert_eq!(p["success"], json!(false));
        assert_eq!(p["response_time_ms"].as_f64(), Some(250.0));
        assert_eq!(p["error_message"], json!("failed: http_status"));
        assert_eq!(p["method"], json!("GET"));
        assert_eq!(p["expected_status_codes"], json!(["2xx"]));
        assert_eq!(p["consecutive_failures"], json!(1));
        assert_eq!(p["ttfb_ms"].as_f64(), Some(200.0));
        assert_eq!(count("SELECT count(*) FROM synthetic_monitoring.events WHERE event = 'synthetic_http_check'"), 4);
    }

    #[pg_test]
    fn results_of_deleted_or_paused_monitors() {
        let gone = id_of(&create_named("gone-meanwhile"));
        Spi::run(&format!("SELECT synthetic_monitoring.delete_monitor({TEAM}, '{gone}')")).unwrap();
        assert_eq!(record(&gone, true, None, Some(200)), json!([]), "a deleted monitor's result is dropped");
        let paused = id_of(&create_named("paused-meanwhile"));
        Spi::run(&format!("SELECT synthetic_monitoring.pause_monitor({TEAM}, '{paused}')")).unwrap();
        record(&paused, false, Some("connect"), None);
        assert_eq!(monitor_row(&paused)["state"], json!("disabled"));
    }

    #[pg_test]
    fn test_monitor_records_a_refused_target() {
        // Without an allowlist, loopback targets are refused (and never contacted).
        let m = create(TEAM, json!({"name": "local", "url": "http://127.0.0.1:9/", "timeout_ms": 2000}));
        let id = id_of(&m);
        let check = value(&format!("SELECT to_jsonb(c) FROM synthetic_monitoring.test_monitor({TEAM}, '{id}') c"));
        assert_eq!(check["trigger"], json!("manual"));
        assert_eq!(check["success"], json!(false));
        assert_eq!(check["error_class"], json!("blocked"));
        assert_eq!(check["status_code"], Value::Null);
        assert!(check["error_message"].as_str().unwrap().contains("127.0.0.1"), "{check}");
        let row = monitor_row(&id);
        assert_eq!(row["state"], json!("failing"));
        assert_eq!(row["consecutive_failures"], json!(1));
        assert_eq!(row["next_check_at"], m["next_check_at"], "a manual check leaves the schedule alone");
        assert_eq!(count("SELECT count(*) FROM synthetic_monitoring.events WHERE event = 'synthetic_http_check' AND properties->>'trigger' = 'manual'"), 1);
        assert_refused(&format!("SELECT synthetic_monitoring.test_monitor({OTHER_TEAM}, '{id}')"), "P0002", &id);
    }

    #[pg_test]
    fn worker_status_without_preload() {
        let status = value("SELECT to_jsonb(s) FROM synthetic_monitoring.worker_status() s");
        assert_eq!(status["running"], json!(false));
        assert_eq!(status["pid"], Value::Null);
        assert_eq!(status["region"], json!("local"));
    }

    // ---- roles and privileges ---------------------------------------------------

    /// Lets `role` use the test helpers (rolled back with the test).
    fn become_role(role: &str) {
        Spi::run(&format!("GRANT USAGE ON SCHEMA tests TO {role}")).unwrap();
        Spi::run(&format!("GRANT EXECUTE ON FUNCTION tests.try_sql(text) TO {role}")).unwrap();
        Spi::run(&format!("SET LOCAL ROLE {role}")).unwrap();
    }

    #[pg_test]
    fn app_role_can_use_the_api_and_nothing_else() {
        become_role("synthetic_monitoring_app");
        let m = create_named("from-the-app");
        let id = id_of(&m);
        assert_eq!(listed(&TEAM.to_string()), vec!["from-the-app"]);
        Spi::run(&format!("SELECT synthetic_monitoring.pause_monitor({TEAM}, '{id}')")).unwrap();
        Spi::run(&format!("SELECT synthetic_monitoring.get_monitor({TEAM}, '{id}')")).unwrap();
        Spi::run(&format!("SELECT * FROM synthetic_monitoring.monitor_checks({TEAM}, '{id}')")).unwrap();
        Spi::run("SELECT * FROM synthetic_monitoring.worker_status()").unwrap();
        for forbidden in [
            "SELECT * FROM synthetic_monitoring.monitors".to_string(),
            "SELECT * FROM synthetic_monitoring.checks".to_string(),
            "SELECT * FROM synthetic_monitoring.events".to_string(),
            format!("UPDATE synthetic_monitoring.monitors SET team_id = 2 WHERE id = '{id}'"),
            "SELECT synthetic_monitoring._record_checks('[]')".to_string(),
            "SELECT synthetic_monitoring._claim_due_checks('local', 10)".to_string(),
            "SELECT synthetic_monitoring._normalize_monitor_spec(NULL, '{}')".to_string(),
        ] {
            let error = refusal(&forbidden);
            assert_eq!(error["sqlstate"], json!("42501"), "{forbidden}: {error}");
        }
        // Team isolation holds for the app role too.
        assert_refused(&format!("SELECT synthetic_monitoring.get_monitor({OTHER_TEAM}, '{id}')"), "P0002", &id);
    }

    #[pg_test]
    fn public_can_do_nothing() {
        Spi::run("CREATE ROLE synthetic_monitoring_test_stranger").unwrap();
        become_role("synthetic_monitoring_test_stranger");
        for forbidden in [
            "SELECT synthetic_monitoring.create_monitor(1, '{\"name\": \"x\", \"url\": \"https://a.example\"}')",
            "SELECT * FROM synthetic_monitoring.list_monitors(1)",
            "SELECT * FROM synthetic_monitoring.worker_status()",
            "SELECT * FROM synthetic_monitoring.monitors",
        ] {
            let error = refusal(forbidden);
            assert_eq!(error["sqlstate"], json!("42501"), "{forbidden}: {error}");
        }
    }

    // ---- fuzzed specs: the API and the table constraints agree ------------------

    /// Small deterministic generator (xorshift) so a failure reproduces.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
            &items[(self.next() % items.len() as u64) as usize]
        }
    }

    fn wild_value(rng: &mut Rng) -> Value {
        let texts = ["", " ", "x", "GET", "get", "2xx", "6xx", "200", "#ch", "a@b.co", "not mail", "http://a.b/",
                     "https://u:p@h.example/?token=1", "ftp://x", "\u{1F600}", "é", "local", "US", "0", "-1", "null"];
        match rng.next() % 9 {
            0 => Value::Null,
            1 => json!(rng.next() % 2 == 0),
            2 => json!((rng.next() % 400_000) as i64 - 1000),
            3 => json!((rng.next() % 1000) as f64 / 7.0),
            4 | 5 => json!(rng.pick(&texts)),
            6 => json!([rng.pick(&texts), (rng.next() % 700) as i64]),
            7 => json!({ *rng.pick(&texts): rng.pick(&texts) }),
            _ => json!("x".repeat((rng.next() % 3000) as usize)),
        }
    }

    #[pg_test]
    fn fuzzed_specs_either_create_a_valid_row_or_are_refused_with_22023() {
        let fields = crate::spec::SPEC_FIELDS;
        let mut rng = Rng(0x5eed_1234_abcd_9876);
        let mut created = 0;
        for round in 0..400 {
            let mut spec = json!({"name": "fuzz", "url": "https://fuzz.example.com/", "frequency_minutes": 5});
            for _ in 0..(1 + rng.next() % 2) {
                let key = if rng.next() % 10 == 0 { "bogus_key" } else { *rng.pick(fields) };
                spec[key] = wild_value(&mut rng);
            }
            let statement = format!("SELECT synthetic_monitoring.create_monitor({TEAM}, {}::jsonb)", quoted(&spec.to_string()));
            let error = value(&format!("SELECT tests.try_sql({})", quoted(&statement)));
            if error.is_null() {
                created += 1;
            } else {
                assert_eq!(error["sqlstate"], json!("22023"), "round {round}: {spec} -> {error}");
                assert!(!error["hint"].as_str().unwrap_or_default().is_empty(), "round {round}: {error}");
            }
        }
        assert!(created >= 5, "the fuzzer should also produce valid specs: {created}");
        assert_eq!(count("SELECT count(*) FROM synthetic_monitoring.monitors"), created);
    }

    // ---- alert rules and the outbox ---------------------------------------------

    fn alerting_monitor(name: &str) -> String {
        id_of(&create(
            TEAM,
            json!({"name": name, "url": format!("https://{name}.example.com/"), "alert_threshold_failures": 3,
                   "alert_recipients": ["a@example.com", "b@example.com"], "slack_channel": "#ops",
                   "webhook_url": "https://hook-user:hook-pass@hooks.example.com/T1/secret-path"}),
        ))
    }

    /// Feeds a sequence of results ('F' failure, 'S' success) and returns the
    /// alert kinds queued, one per alert (the outbox holds one row per destination).
    fn alerts_after(id: &str, sequence: &str) -> Vec<String> {
        for step in sequence.chars() {
            match step {
                'F' => record(id, false, Some("http_status"), Some(503)),
                _ => record(id, true, None, Some(200)),
            };
        }
        let kinds = value(&format!(
            "SELECT coalesce(jsonb_agg(kind ORDER BY min_id), '[]') FROM (
                 SELECT kind, min(id) AS min_id FROM synthetic_monitoring.outbox WHERE monitor_id = '{id}'
                 GROUP BY kind, (payload->>'check_id')) a"
        ));
        kinds.as_array().unwrap().iter().map(|k| k.as_str().unwrap().to_string()).collect()
    }

    #[pg_test]
    fn alert_once_at_threshold_then_recovery() {
        let id = alerting_monitor("fffsf");
        assert_eq!(alerts_after(&id, "FFFSF"), vec!["failure", "recovery"]);
        assert_eq!(count(&format!("SELECT count(*) FROM synthetic_monitoring.outbox WHERE monitor_id = '{id}'")), 8, "4 destinations x 2 alerts");
        let destinations = value(&format!(
            "SELECT jsonb_agg(channel || ':' || destination ORDER BY channel, destination) FROM synthetic_monitoring.outbox WHERE monitor_id = '{id}' AND kind = 'failure'"
        ));
        assert_eq!(
            destinations,
            json!(["email:a@example.com", "email:b@example.com", "slack:#ops", "webhook:https://hook-user:hook-pass@hooks.example.com/T1/secret-path"])
        );
        let payload = value(&format!("SELECT payload FROM synthetic_monitoring.outbox WHERE monitor_id = '{id}' AND kind = 'failure' LIMIT 1"));
        assert_eq!(payload["consecutive_failures"], json!(3));
        assert_eq!(payload["status_code"], json!(503));
        assert_eq!(payload["monitor_name"], json!("fffsf"));
        assert_eq!(payload["error_message"], json!("failed: http_status"));
        let recovery = value(&format!("SELECT payload FROM synthetic_monitoring.outbox WHERE monitor_id = '{id}' AND kind = 'recovery' LIMIT 1"));
        assert_eq!(recovery["consecutive_failures"], json!(3), "the recovery tells how long the outage was");
        let m = monitor_row(&id);
        assert_eq!(m["alerting"], json!(false));
        assert_eq!(m["consecutive_failures"], json!(1));
    }

    #[pg_test]
    fn a_blip_alerts_nobody() {
        let id = alerting_monitor("blip");
        assert_eq!(alerts_after(&id, "FS"), Vec::<String>::new());
        assert_eq!(alerts_after(&id, "FFS"), Vec::<String>::new());
    }

    #[pg_test]
    fn still_failing_after_the_cooldown_sends_one_reminder() {
        let id = alerting_monitor("cooldown");
        assert_eq!(alerts_after(&id, "FFFFF"), vec!["failure"], "within the cooldown: no repeat");
        Spi::run(&format!(
            "UPDATE synthetic_monitoring.monitors SET last_alerted_at = last_alerted_at - interval '61 minutes' WHERE id = '{id}'"
        ))
        .unwrap();
        assert_eq!(alerts_after(&id, "FF"), vec!["failure", "reminder"]);
        assert_eq!(alerts_after(&id, "S"), vec!["failure", "reminder", "recovery"]);
    }

    #[pg_test]
    fn no_alerts_when_disabled_paused_or_checker_fault() {
        let quiet = alerting_monitor("quiet");
        Spi::run(&format!("SELECT synthetic_monitoring.update_monitor({TEAM}, '{quiet}', '{{\"alert_enabled\": false}}')")).unwrap();
        assert_eq!(alerts_after(&quiet, "FFFF"), Vec::<String>::new());
        let faulty = alerting_monitor("faulty");
        for _ in 0..4 {
            record(&faulty, false, Some("internal"), None);
        }
        assert_eq!(count(&format!("SELECT count(*) FROM synthetic_monitoring.outbox WHERE monitor_id = '{faulty}'")), 0);
        let paused = alerting_monitor("paused-alerts");
        Spi::run(&format!("SELECT synthetic_monitoring.pause_monitor({TEAM}, '{paused}')")).unwrap();
        assert_eq!(alerts_after(&paused, "FFFF"), Vec::<String>::new());
    }

    fn claim_deliveries(n: i32) -> Vec<Value> {
        let rows = value(&format!("SELECT coalesce(jsonb_agg(d), '[]') FROM synthetic_monitoring._claim_deliveries({n}) d"));
        rows.as_array().unwrap().clone()
    }

    fn complete(outcomes: Value) {
        Spi::run(&format!("SELECT synthetic_monitoring._complete_deliveries({}::jsonb, 3, 1000)", quoted(&outcomes.to_string()))).unwrap();
    }

    fn outbox_row(id: i64) -> Value {
        value(&format!("SELECT to_jsonb(o) FROM synthetic_monitoring.outbox o WHERE id = {id}"))
    }

    #[pg_test]
    fn deliveries_are_claimed_once_retried_and_die_visibly() {
        let id = id_of(&create(TEAM, json!({"name": "d", "url": "https://d.example.com/", "alert_threshold_failures": 1,
                                             "alert_recipients": ["ops@example.com"]})));
        record(&id, false, Some("timeout"), None);
        let claimed = claim_deliveries(10);
        assert_eq!(claimed.len(), 1);
        let row_id = claimed[0]["id"].as_i64().unwrap();
        assert_eq!(claimed[0]["channel"], json!("email"));
        assert_eq!(claimed[0]["payload"]["kind"], json!("failure"));
        assert_eq!(claim_deliveries(10).len(), 0, "a claimed row is not claimed again");
        assert_eq!(outbox_row(row_id)["state"], json!("delivering"));

        complete(json!([{"id": row_id, "delivered": false, "permanent": false, "error": "SMTP down", "retry_after_s": null}]));
        let row = outbox_row(row_id);
        assert_eq!(row["state"], json!("pending"));
        assert_eq!(row["attempts"], json!(1));
        assert_eq!(row["last_error"], json!("SMTP down"));
        let delay = Spi::get_one::<f64>(&format!(
            "SELECT extract(epoch FROM next_attempt_at - now())::float8 FROM synthetic_monitoring.outbox WHERE id = {row_id}"
        ))
        .unwrap()
        .unwrap();
        assert!((0.5..=1.5).contains(&delay), "first retry after the base delay with jitter: {delay}");

        // Retry-After wins over the backoff.
        Spi::run(&format!("UPDATE synthetic_monitoring.outbox SET next_attempt_at = now() WHERE id = {row_id}")).unwrap();
        assert_eq!(claim_deliveries(10).len(), 1);
        complete(json!([{"id": row_id, "delivered": false, "permanent": false, "error": "429", "retry_after_s": 120}]));
        let delay = Spi::get_one::<f64>(&format!(
            "SELECT extract(epoch FROM next_attempt_at - now())::float8 FROM synthetic_monitoring.outbox WHERE id = {row_id}"
        ))
        .unwrap()
        .unwrap();
        assert_eq!(delay, 120.0);

        Spi::run(&format!("UPDATE synthetic_monitoring.outbox SET next_attempt_at = now() WHERE id = {row_id}")).unwrap();
        assert_eq!(claim_deliveries(10).len(), 1);
        complete(json!([{"id": row_id, "delivered": false, "permanent": false, "error": "still down", "retry_after_s": null}]));
        let row = outbox_row(row_id);
        assert_eq!(row["state"], json!("dead"), "after max_attempts (3) the row is dead");
        assert_eq!(row["attempts"], json!(3));
        assert_eq!(row["last_error"], json!("still down"));

        let listed = value(&format!("SELECT jsonb_agg(to_jsonb(o)) FROM synthetic_monitoring.alert_outbox({TEAM}, with_state => 'dead') o"));
        assert_eq!(listed[0]["id"], json!(row_id));
        assert_eq!(listed[0]["destination"], json!("ops@example.com"));
        assert_refused(&format!("SELECT synthetic_monitoring.alert_outbox({OTHER_TEAM}, with_state => 'lost')"), "22023", "with_state");
        assert_refused(&format!("SELECT synthetic_monitoring.retry_alert({OTHER_TEAM}, {row_id})"), "P0002", &row_id.to_string());
        let key = row["idempotency_key"].clone();
        assert!(Spi::get_one::<bool>(&format!("SELECT synthetic_monitoring.retry_alert({TEAM}, {row_id})")).unwrap().unwrap());
        let row = outbox_row(row_id);
        assert_eq!(row["state"], json!("pending"));
        assert_eq!(row["attempts"], json!(0));
        assert_eq!(row["idempotency_key"], key, "a retry keeps the idempotency key");
        assert_refused(&format!("SELECT synthetic_monitoring.retry_alert({TEAM}, {row_id})"), "22023", "outbox_id");

        assert_eq!(claim_deliveries(10).len(), 1);
        complete(json!([{"id": row_id, "delivered": true, "permanent": false, "error": null, "retry_after_s": null}]));
        let row = outbox_row(row_id);
        assert_eq!(row["state"], json!("delivered"));
        assert!(!row["delivered_at"].is_null());
    }

    #[pg_test]
    fn permanent_failures_die_at_once_and_claims_survive_restarts() {
        let id = id_of(&create(TEAM, json!({"name": "p", "url": "https://p.example.com/", "alert_threshold_failures": 1,
                                             "alert_recipients": ["x@example.com", "y@example.com"]})));
        record(&id, false, Some("timeout"), None);
        let claimed = claim_deliveries(10);
        assert_eq!(claimed.len(), 2);
        let (first, second) = (claimed[0]["id"].as_i64().unwrap(), claimed[1]["id"].as_i64().unwrap());
        complete(json!([{"id": first, "delivered": false, "permanent": true, "error": "550 no such user", "retry_after_s": null}]));
        assert_eq!(outbox_row(first)["state"], json!("dead"));
        assert_eq!(outbox_row(first)["attempts"], json!(1));
        // The worker died between claim and completion of the second row.
        let recovered = Spi::get_one::<i32>("SELECT synthetic_monitoring._recover_deliveries()").unwrap().unwrap();
        assert_eq!(recovered, 1);
        let again = claim_deliveries(10);
        assert_eq!(again.len(), 1);
        assert_eq!(again[0]["id"], json!(second));
        assert_eq!(again[0]["idempotency_key"], claimed[1]["idempotency_key"]);
        assert_eq!(outbox_row(second)["attempts"], json!(2));
    }

    #[pg_test]
    fn outbox_hides_webhook_paths() {
        let id = alerting_monitor("hidden");
        alerts_after(&id, "FFF");
        let destinations = value(&format!(
            "SELECT jsonb_agg(destination ORDER BY destination) FROM synthetic_monitoring.alert_outbox({TEAM}, for_monitor => '{id}')"
        ));
        assert_eq!(destinations, json!(["#ops", "a@example.com", "b@example.com", "https://hooks.example.com/***"]));
    }

    #[pg_test]
    fn secret_settings_are_hidden_from_non_superusers() {
        become_role("synthetic_monitoring_app");
        let error = refusal("SHOW synthetic_monitoring.smtp_password");
        assert_eq!(error["sqlstate"], json!("42501"), "{error}");
        let listed = count("SELECT count(*) FROM pg_settings WHERE name IN ('synthetic_monitoring.smtp_password', 'synthetic_monitoring.slack_bot_token', 'synthetic_monitoring.webhook_signing_secret')");
        assert_eq!(listed, 0);
    }

    #[pg_test]
    fn event_ids_are_time_ordered_version_7() {
        let ordered = Spi::get_one::<bool>(
            "SELECT bool_and(a < b) FROM (
                 SELECT synthetic_monitoring._uuid_v7(now() + make_interval(secs => g)) AS a,
                        synthetic_monitoring._uuid_v7(now() + make_interval(secs => g + 1)) AS b
                 FROM generate_series(1, 200) g) t",
        )
        .unwrap()
        .unwrap();
        assert!(ordered);
        let id = Spi::get_one::<String>("SELECT synthetic_monitoring._uuid_v7('2026-01-01 00:00:00+00')::text").unwrap().unwrap();
        assert_eq!(&id[..13], "019b76da-a800", "48-bit millisecond timestamp prefix: {id}");
        assert_eq!(&id[14..15], "7", "version 7: {id}");
        assert!("89ab".contains(&id[19..20]), "RFC 4122 variant: {id}");
    }

    #[pg_test]
    fn json_beyond_what_rust_represents_is_refused_cleanly() {
        let huge = assert_refused(
            "SELECT synthetic_monitoring.create_monitor(1, '{\"name\": \"n\", \"url\": \"http://a.b\", \"timeout_ms\": 1e309}')",
            "22023",
            "spec",
        );
        assert!(huge["message"].as_str().unwrap().contains("number out of range"), "{huge}");
        let deep = format!("{}1{}", "[".repeat(200), "]".repeat(200));
        let nested = assert_refused(
            &format!("SELECT synthetic_monitoring.create_monitor(1, '{{\"name\": \"n\", \"url\": \"http://a.b\", \"regions\": {deep}}}')"),
            "22023",
            "spec",
        );
        assert!(nested["message"].as_str().unwrap().contains("recursion limit"), "{nested}");
    }

    #[pg_test]
    fn rows_cannot_be_attributed_to_another_team() {
        let id = id_of(&create_named("mine"));
        let error = refusal(&format!(
            "INSERT INTO synthetic_monitoring.checks (monitor_id, team_id, region, trigger, started_at, finished_at, success)
             VALUES ('{id}', {OTHER_TEAM}, 'local', 'scheduled', now(), now(), true)"
        ));
        assert_eq!(error["sqlstate"], json!("23503"), "{error}");
        let error = refusal(&format!(
            "INSERT INTO synthetic_monitoring.outbox (team_id, monitor_id, kind, channel, destination, payload)
             VALUES ({OTHER_TEAM}, '{id}', 'failure', 'email', 'a@example.com', '{{}}')"
        ));
        assert_eq!(error["sqlstate"], json!("23503"), "{error}");
    }

    #[pg_test]
    fn more_direct_writes_are_refused() {
        let id = id_of(&create_named("direct"));
        let cases = [
            direct_insert("headers", "'{\"Connection\": \"upgrade\"}'"),
            direct_insert("headers", "'{\"X-A\": \"a\\r\\nX-B: b\"}'"),
            direct_insert("headers", "'{\"Bad Name\": \"x\"}'"),
            direct_insert("name", "E'\\t'"),
            direct_insert("next_check_at", "'infinity'"),
            format!(
                "INSERT INTO synthetic_monitoring.checks (monitor_id, team_id, region, trigger, started_at, finished_at, success, dns_ms)
                 VALUES ('{id}', 1, 'local', 'scheduled', now(), now(), true, 'NaN')"
            ),
            format!(
                "INSERT INTO synthetic_monitoring.outbox (team_id, monitor_id, kind, channel, destination, payload)
                 VALUES (1, '{id}', 'failure', 'email', E'a@b.co\\r\\nBcc: evil@x.y', '{{}}')"
            ),
            format!(
                "INSERT INTO synthetic_monitoring.outbox (team_id, monitor_id, kind, channel, destination, payload)
                 VALUES (1, '{id}', 'failure', 'webhook', 'file:///etc/passwd', '{{}}')"
            ),
        ];
        for statement in cases {
            let error = refusal(&statement);
            assert_eq!(error["sqlstate"], json!("23514"), "{statement}: {error}");
        }
    }

    #[pg_test]
    fn an_invalid_allowlist_is_refused_when_set() {
        let error = refusal("SET synthetic_monitoring.allowed_networks = 'garbage'");
        assert_eq!(error["sqlstate"], json!("22023"), "{error}");
        assert!(error["message"].as_str().unwrap().contains("synthetic_monitoring.allowed_networks"), "{error}");
        Spi::run("SET LOCAL synthetic_monitoring.allowed_networks = '10.1.0.0/16, ::1'").unwrap();
    }
}
