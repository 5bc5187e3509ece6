//! Tests of the configuration layers.

use super::*;
use std::collections::HashMap;

fn resolve_with(
    flags: &Flags,
    env: &[(&str, &str)],
    file: Option<&str>,
) -> Result<Config, ConfigError> {
    let dir = tempfile::tempdir().expect("tempdir");
    if let Some(text) = file {
        std::fs::write(dir.path().join(DEFAULT_CONFIG_FILE), text).expect("write config");
    }
    let env: HashMap<String, String> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Config::resolve(flags, &|name| env.get(name).cloned(), dir.path())
}

#[test]
fn defaults_without_any_layer() {
    let config = resolve_with(&Flags::default(), &[], None).expect("defaults are valid");
    assert_eq!(config, Config::default());
    assert_eq!(config.listen.to_string(), "127.0.0.1:8080");
    assert_eq!(config.data_dir, PathBuf::from("./bigpeer-data"));
    // The documented defaults are the real ones.
    for s in SETTINGS {
        let shown = match s.key {
            "listen" => config.listen.to_string(),
            "data_dir" => config.data_dir.display().to_string(),
            "log_format" => "pretty".into(),
            "log_level" => config.log_level.clone(),
            "pool_size" => config.pool_size.to_string(),
            "connect_timeout" => format!("{}s", config.connect_timeout.as_secs()),
            "shutdown_timeout" => format!("{}s", config.shutdown_timeout.as_secs()),
            "migrate_on_start" => config.migrate_on_start.to_string(),
            _ => continue,
        };
        assert_eq!(shown, s.default, "documented default of {}", s.key);
    }
}

#[test]
fn flags_beat_environment_beats_file() {
    let file =
        "listen = \"0.0.0.0:1000\"\npool_size = 3\nlog_format = \"json\"\nshutdown_timeout = 5\n";
    let env = [
        ("BIGPEER_LISTEN", "0.0.0.0:2000"),
        ("BIGPEER_POOL_SIZE", "4"),
    ];
    let flags = Flags {
        listen: Some("127.0.0.1:3000".into()),
        ..Flags::default()
    };
    let config = resolve_with(&flags, &env, Some(file)).expect("valid");
    assert_eq!(config.listen.to_string(), "127.0.0.1:3000");
    assert_eq!(config.pool_size, 4);
    assert_eq!(config.log_format, LogFormat::Json);
    assert_eq!(config.shutdown_timeout, Duration::from_secs(5));

    let config = resolve_with(&Flags::default(), &env, Some(file)).expect("valid");
    assert_eq!(config.listen.to_string(), "0.0.0.0:2000");
}

#[test]
fn empty_environment_variables_count_as_unset() {
    let config = resolve_with(
        &Flags::default(),
        &[("DATABASE_URL", ""), ("BIGPEER_LISTEN", "")],
        None,
    )
    .expect("valid");
    assert_eq!(config.database_url, None);
    assert_eq!(config.listen.to_string(), "127.0.0.1:8080");
}

#[test]
fn bigpeer_log_level_beats_rust_log() {
    let config = resolve_with(&Flags::default(), &[("RUST_LOG", "debug")], None).expect("valid");
    assert_eq!(config.log_level, "debug");
    let both = [("RUST_LOG", "debug"), ("BIGPEER_LOG_LEVEL", "warn")];
    let config = resolve_with(&Flags::default(), &both, None).expect("valid");
    assert_eq!(config.log_level, "warn");
}

#[test]
fn no_migrate_flag_turns_off_migrations() {
    let env = [("BIGPEER_MIGRATE_ON_START", "yes")];
    let flags = Flags {
        no_migrate: true,
        ..Flags::default()
    };
    assert!(
        !resolve_with(&flags, &env, None)
            .expect("valid")
            .migrate_on_start
    );
    assert!(
        resolve_with(&Flags::default(), &env, None)
            .expect("valid")
            .migrate_on_start
    );
    let off = resolve_with(&Flags::default(), &[], Some("migrate_on_start = false\n"));
    assert!(!off.expect("valid").migrate_on_start);
}

#[test]
fn unknown_key_is_named_with_a_suggestion() {
    let err = resolve_with(&Flags::default(), &[], Some("listn = \"0.0.0.0:1\"\n"))
        .expect_err("unknown key");
    assert_eq!(err.code(), "config/unknown-key");
    assert!(
        err.to_string()
            .starts_with("unknown key \"listn\" in config file"),
        "{err}"
    );
    let hint = err.hint().unwrap_or_default();
    assert!(hint.starts_with("did you mean \"listen\"?"), "{hint}");

    let err = resolve_with(&Flags::default(), &[], Some("[server]\nport = 1\n"))
        .expect_err("tables are unknown keys");
    assert!(err.to_string().contains("unknown key \"server\""), "{err}");
}

#[test]
fn precise_messages_for_bad_values() {
    type Case<'a> = (&'a [(&'a str, &'a str)], Option<&'a str>, &'a str, &'a str);
    let cases: &[Case] = &[
        (
            &[("BIGPEER_LISTEN", "8080")],
            None,
            "invalid listen \"8080\" in environment variable BIGPEER_LISTEN: the port is missing",
            "config/invalid-value",
        ),
        (
            &[("BIGPEER_LISTEN", "example.com:80")],
            None,
            "invalid listen \"example.com:80\" in environment variable BIGPEER_LISTEN: the host must be an IP address",
            "config/invalid-value",
        ),
        (
            &[("BIGPEER_LOG_FORMAT", "xml")],
            None,
            "invalid log_format \"xml\" in environment variable BIGPEER_LOG_FORMAT: expected pretty or json",
            "config/invalid-value",
        ),
        (
            &[],
            Some("pool_size = 0\n"),
            "invalid pool_size 0 in config file",
            "config/invalid-value",
        ),
        (
            &[],
            Some("pool_size = \"ten\"\n"),
            "invalid pool_size \"ten\" in config file",
            "config/invalid-value",
        ),
        (
            &[("BIGPEER_SHUTDOWN_TIMEOUT", "soon")],
            None,
            "invalid shutdown_timeout \"soon\" in environment variable BIGPEER_SHUTDOWN_TIMEOUT: expected a duration",
            "config/invalid-value",
        ),
        (
            &[("DATABASE_URL", "mysql://u:hunter2@h/db")],
            None,
            "invalid database_url \"mysql://u:***@h/db\" in environment variable DATABASE_URL: expected a postgres:// URL",
            "config/invalid-value",
        ),
        (
            &[("BIGPEER_CHANGES_RETENTION", "30s")],
            None,
            "invalid changes_retention \"30s\" in environment variable BIGPEER_CHANGES_RETENTION: must be at least 1m",
            "config/invalid-value",
        ),
        (&[], Some("listen = 8080\n"), "invalid listen 8080 in config file", "config/invalid-value"),
        (&[], Some("listen = \n"), "is not valid TOML", "config/file-syntax"),
    ];
    for (env, file, message, code) in cases {
        let err = resolve_with(&Flags::default(), env, *file).expect_err(message);
        assert!(
            err.to_string().contains(message),
            "got: {err}\nwanted: {message}"
        );
        assert_eq!(err.code(), *code, "{err}");
        assert!(err.hint().is_some(), "{err} has a hint");
    }
}

#[test]
fn changes_retention_in_every_layer() {
    assert_eq!(
        Config::default().changes_retention,
        Duration::from_secs(7 * 24 * 3600)
    );
    let config = resolve_with(
        &Flags::default(),
        &[("BIGPEER_CHANGES_RETENTION", "2h")],
        None,
    )
    .expect("valid");
    assert_eq!(config.changes_retention, Duration::from_secs(7200));
    let flags = Flags {
        changes_retention: Some("3d".into()),
        ..Flags::default()
    };
    let config = resolve_with(&flags, &[], Some("changes_retention = \"1h\"\n")).expect("valid");
    assert_eq!(config.changes_retention, Duration::from_secs(3 * 24 * 3600));
}

#[test]
fn flag_errors_name_the_flag() {
    let flags = Flags {
        pool_size: Some("0".into()),
        ..Flags::default()
    };
    let err = resolve_with(&flags, &[], None).expect_err("pool size 0");
    assert_eq!(
        err.to_string(),
        "invalid pool_size \"0\" on the command line (--pool-size): must be between 1 and 10000"
    );
}

#[test]
fn explicit_config_file_must_exist() {
    let flags = Flags {
        config: Some(PathBuf::from("/nonexistent/bigpeer.toml")),
        ..Flags::default()
    };
    let err = resolve_with(&flags, &[], None).expect_err("missing file");
    assert_eq!(err.code(), "config/file-not-found");
    let err = resolve_with(
        &Flags::default(),
        &[(CONFIG_ENV, "/nonexistent/x.toml")],
        None,
    )
    .expect_err("missing file from env");
    assert_eq!(err.code(), "config/file-not-found");
}

#[test]
fn passwords_are_masked() {
    assert_eq!(
        mask_password("postgres://app:s3cr%40t@db:5432/bigpeer"),
        "postgres://app:***@db:5432/bigpeer"
    );
    assert_eq!(
        mask_password("postgres://app@db/bigpeer"),
        "postgres://app@db/bigpeer"
    );
    assert_eq!(
        mask_password("postgres://db/x?user=a&password=b&sslmode=require"),
        "postgres://db/x?user=a&password=***&sslmode=require"
    );
    let url = DatabaseUrl::new("postgres://u:pw@h/d");
    assert_eq!(format!("{url:?}"), "DatabaseUrl(postgres://u:***@h/d)");
    assert_eq!(url.expose(), "postgres://u:pw@h/d");
}

#[test]
fn unknown_environment_variables_are_found() {
    let vars = [
        "BIGPEER_LISTN",
        "BIGPEER_LISTEN",
        "BIGPEER_CONFIG",
        "BIGPEER_TEST_DATABASE_URL",
        "HOME",
        "BIGPEER_XYZZY_FROB",
    ]
    .map(String::from);
    assert_eq!(
        unknown_env_vars(vars),
        vec![
            ("BIGPEER_LISTN".to_string(), Some("BIGPEER_LISTEN")),
            ("BIGPEER_XYZZY_FROB".to_string(), None)
        ]
    );
}

#[test]
fn printed_settings_read_back_the_same() {
    let flags = Flags {
        listen: Some("0.0.0.0:9000".into()),
        database_url: Some("postgres://u@h:5432/d".into()),
        connect_timeout: Some("1500ms".into()),
        log_format: Some("json".into()),
        no_migrate: true,
        ..Flags::default()
    };
    let config = resolve_with(&flags, &[], None).expect("valid");
    let again = resolve_with(&Flags::default(), &[], Some(&config.to_toml())).expect("valid TOML");
    assert_eq!(again, config);
}

#[test]
fn durations() {
    assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
    assert_eq!(parse_duration("10"), Some(Duration::from_secs(10)));
    assert_eq!(parse_duration("2m"), Some(Duration::from_secs(120)));
    assert_eq!(parse_duration("1h"), Some(Duration::from_secs(3600)));
    assert_eq!(parse_duration("1d"), Some(Duration::from_secs(86_400)));
    assert_eq!(parse_duration("1h 30m"), Some(Duration::from_secs(5_400)));
    assert_eq!(parse_duration("soon"), None);
    assert_eq!(parse_duration("10 parsecs"), None);
    assert_eq!(parse_duration("-1s"), None);
    assert_eq!(parse_duration(""), None);
}

#[test]
fn readme_documents_every_setting() {
    let readme = include_str!("../../../README.md");
    for s in SETTINGS {
        let row = readme
            .lines()
            .find(|l| l.starts_with(&format!("| `{}`", s.key)))
            .unwrap_or_else(|| panic!("README.md has no table row for `{}`", s.key));
        for name in s.env.iter().chain([&s.flag]) {
            assert!(
                row.contains(&format!("`{name}`")),
                "README row for {} lacks {name}",
                s.key
            );
        }
        assert!(
            row.contains(s.default),
            "README row for {} lacks default {}",
            s.key,
            s.default
        );
    }
}

#[test]
fn nats_sink_settings_in_every_layer_with_credentials_masked() {
    let config = resolve_with(&Flags::default(), &[], None).expect("valid");
    assert_eq!(config.nats_url, None);
    assert_eq!(config.nats_subject_prefix, "bigpeer");
    assert!(config.to_toml().contains("# nats_url: unset"));

    let config = resolve_with(
        &Flags::default(),
        &[
            (
                "BIGPEER_NATS_URL",
                "nats://cdc:s3cret@n1:4222,nats://n2:4222",
            ),
            ("BIGPEER_NATS_SUBJECT_PREFIX", "acme.cdc-1"),
        ],
        None,
    )
    .expect("valid");
    let url = config.nats_url.clone().expect("set");
    assert_eq!(url.expose(), "nats://cdc:s3cret@n1:4222,nats://n2:4222");
    assert_eq!(
        format!("{url:?}"),
        "NatsUrl(nats://cdc:***@n1:4222,nats://n2:4222)"
    );
    assert_eq!(config.nats_subject_prefix, "acme.cdc-1");
    let toml = config.to_toml();
    assert!(!toml.contains("s3cret"), "{toml}");
    assert!(toml.contains("nats_url = \"nats://cdc:***@n1:4222,nats://n2:4222\""));
    // A token is all secret.
    assert_eq!(
        mask_nats_url("tls://T0KEN@host:4222"),
        "tls://***@host:4222"
    );

    let flags = Flags {
        nats_url: Some("nats://127.0.0.1:4222".into()),
        nats_subject_prefix: Some("cli".into()),
        ..Flags::default()
    };
    let config = resolve_with(
        &flags,
        &[("BIGPEER_NATS_SUBJECT_PREFIX", "env")],
        Some("nats_url = \"nats://file:4222\"\nnats_subject_prefix = \"file\"\n"),
    )
    .expect("valid");
    assert_eq!(
        config.nats_url.as_ref().map(NatsUrl::expose),
        Some("nats://127.0.0.1:4222")
    );
    assert_eq!(config.nats_subject_prefix, "cli");
    let again = resolve_with(&Flags::default(), &[], Some(&config.to_toml())).expect("valid TOML");
    assert_eq!(again, config);
}

#[test]
fn bad_nats_settings_are_refused_with_the_secret_masked() {
    for (url, reason) in [
        ("http://n:4222", "the scheme must be nats:// or tls://"),
        ("nats://", "the URL has no host"),
        ("nats://a:4222,", "not a valid URL"),
    ] {
        let err =
            resolve_with(&Flags::default(), &[("BIGPEER_NATS_URL", url)], None).expect_err(url);
        assert_eq!(err.code(), "config/invalid-value");
        assert!(err.to_string().contains(reason), "{url}: {err}");
    }
    let err = resolve_with(
        &Flags::default(),
        &[("BIGPEER_NATS_URL", "http://u:hunter22@n:4222")],
        None,
    )
    .expect_err("scheme");
    assert!(!err.to_string().contains("hunter22"), "{err}");
    for prefix in [
        "",
        "a..b",
        ".a",
        "a.",
        "a.*",
        "a.>",
        "two words",
        "a/b",
        "é",
    ] {
        let err = resolve_with(
            &Flags::default(),
            &[("BIGPEER_NATS_SUBJECT_PREFIX", prefix)],
            None,
        );
        // An empty environment variable counts as unset.
        if prefix.is_empty() {
            assert!(err.is_ok());
            continue;
        }
        let err = err.expect_err(prefix);
        assert!(
            err.to_string().starts_with("invalid nats_subject_prefix"),
            "{prefix}: {err}"
        );
    }
    assert!(check_subject_prefix("").is_err());
    assert!(check_subject_prefix(&"a".repeat(129)).is_err());
    assert!(check_subject_prefix("Acme_1.cdc-x").is_ok());
}
